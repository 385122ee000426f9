"""`gateway jobs …`, `gateway run` writing jobs, and `gateway validate --verbose`, on a
real SQLite file (and PostgreSQL through the `storage_url` fixture)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.storage import Job, open_storage

CONFIG = """
kind: api_workflow
name: signup
auth: none
params:
  name: {type: text}
steps:
  - id: later
    action: schedule_workflow
    workflow: welcome
    delay: 1h
    params: {name: "{{ params.name }}"}
  - action: return_data
    data: {job: "{{ steps.later.id }}"}
---
kind: api_workflow
name: welcome
label: Say welcome
auth: admin
params:
  name: {type: text}
steps:
  - action: log
    message: "welcome {{ params.name }}"
---
kind: api_workflow
name: sync
auth: admin
params:
  name: {type: text}
concurrency: {key: "acct-{{ params.name }}", limit: 2}
steps:
  - action: log
    message: "sync {{ params.name }}"
---
kind: api_workflow
name: schedule-sync
auth: none
params:
  name: {type: text}
steps:
  - action: schedule_workflow
    workflow: sync
    delay: 1h
    params: {name: "{{ params.name }}"}
---
kind: recurring_event
name: nightly
cron: "0 3 * * *"
timezone: Europe/Paris
workflow: welcome
params: {name: everyone}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(CONFIG).strip() + "\n")
    return path


def test_jobs_from_a_run_listed_cancelled_replayed_paused_and_resumed(
        config: Path, storage_url: str) -> None:
    where = ("--config", str(config), "--database", storage_url)
    ran = invoke("run", "signup", "-p", "name=Ada\nINFO forged", *where)
    assert ran.exit_code == 0, ran.output
    job_id = json.loads(ran.stdout)["response"]["job"]

    listed = invoke("jobs", "list", *where)
    assert listed.exit_code == 0
    assert f"{job_id}" in listed.stdout and "pending" in listed.stdout
    assert "recurring nightly: next run" in listed.stdout
    as_json = [json.loads(line) for line in invoke("jobs", "list", "--json", *where)
               .stdout.splitlines()]
    assert as_json[0]["id"] == job_id and as_json[0]["data"]["params"] == {
        "name": "Ada\nINFO forged"}
    assert as_json[-1]["recurring_event"] == "nightly" and as_json[-1]["state"] == "active"

    shown = json.loads(invoke("jobs", "show", job_id, *where).stdout)
    assert shown["workflow"] == "welcome" and shown["source"] == "schedule"
    assert invoke("jobs", "show", "nope", *where).exit_code == 1

    assert invoke("jobs", "cancel", job_id, *where).stdout == "cancelled 1 job(s)\n"
    again = invoke("jobs", "cancel", job_id, *where)
    assert again.exit_code == 1
    assert invoke("jobs", "list", "--status", "cancelled", *where).stdout.count(job_id) == 1
    assert invoke("jobs", "retry", job_id, *where).exit_code == 0
    assert invoke("jobs", "retry", job_id, *where).exit_code == 1  # pending: nothing to replay

    assert invoke("jobs", "pause", "nightly", *where).exit_code == 0
    assert "(paused)" in invoke("jobs", "list", *where).stdout
    assert invoke("jobs", "resume", *where).exit_code == 0
    assert "(paused)" not in invoke("jobs", "list", *where).stdout


def test_jobs_list_shows_label_scheduler_and_params_and_cancel_by_workflow(
        config: Path, storage_url: str) -> None:
    where = ("--config", str(config), "--database", storage_url)
    huge = "Ada\x1b[31m" + "z" * 50_000
    for name in ("Bo", huge):
        assert invoke("run", "signup", "-p", f"name={name}", *where).exit_code == 0
    listed = invoke("jobs", "list", "--status", "pending", *where).stdout
    lines = [line for line in listed.splitlines() if " welcome " in line]
    assert len(lines) == 2 and all("welcome (Say welcome)  by admin  params {" in line
                                   for line in lines)
    assert max(len(line) for line in lines) < 400 and "\x1b" not in listed
    assert '"name":"Bo"' in listed
    as_json = json.loads(invoke("jobs", "list", "--json", *where).stdout.splitlines()[0])
    assert as_json["label"] == "Say welcome"

    unknown = invoke("jobs", "cancel", "--workflow", "no-such-workflow", *where)
    assert unknown.exit_code == 1 and unknown.stdout.startswith("cancelled 0 job(s)")
    assert "no API workflow or custom event is named no-such-workflow" in unknown.output
    assert invoke("jobs", "cancel", *where).exit_code == 2  # neither ids nor --workflow
    cancelled = invoke("jobs", "cancel", "--workflow", "welcome", *where)
    assert cancelled.exit_code == 0 and cancelled.stdout == "cancelled 2 job(s) of welcome\n"
    again = invoke("jobs", "cancel", "--workflow", "welcome", *where)
    assert again.exit_code == 0 and again.stdout == "cancelled 0 job(s) of welcome\n"


def test_jobs_list_refuses_an_unknown_status(config: Path) -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--status", "lost", "--config",
                                       str(config)])
    assert result.exit_code == 2


def test_validate_verbose_prints_the_next_three_fire_times(config: Path) -> None:
    result = invoke("validate", "--verbose", str(config))
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[-1]
    assert line.startswith("recurring nightly (cron '0 3 * * *' Europe/Paris): next ")
    assert line.count("03:00 CE") == 3


def test_jobs_list_shows_a_keyed_job_s_key(config: Path, storage_url: str) -> None:
    where = ("--config", str(config), "--database", storage_url)
    for name in ("Bo", "Ada\x1b[31m" + "z" * 5_000):
        assert invoke("run", "schedule-sync", "-p", f"name={name}", *where).exit_code == 0
    listed = invoke("jobs", "list", "--workflow", "sync", *where).stdout
    lines = [line for line in listed.splitlines() if "  sync  " in line]
    assert len(lines) == 2 and "\x1b" not in listed
    assert any(line.endswith("  keys concurrency acct-Bo (limit 2)") for line in lines)
    assert all(len(line) < 600 for line in lines)  # a huge key cut short
    as_json = [row for line in invoke("jobs", "list", "--json", "--workflow", "sync",
                                      *where).stdout.splitlines()
               if (row := json.loads(line)).get("workflow") == "sync"]
    assert len(as_json) == 2
    assert {row["flow_key"] for row in as_json} >= {"sync:acct-Bo"}
    assert {row["flow_limit"] for row in as_json} == {2}


async def _waiting_jobs(url: str) -> None:
    """Jobs of `sync` waiting for their keys: one of key a running (limit 1) and one
    pending behind it; one of throttle key t started (1 per 1 h) and one pending behind it
    (made due at its turn); a debounced one due later, and one of key t scheduled later."""
    storage = open_storage(url)
    await storage.open([])
    try:
        now = datetime.now(UTC) - timedelta(seconds=5)
        later = now + timedelta(hours=1)
        await storage.jobs.enqueue([
            Job(id=f"{now:%s}000x00000000000000000{n}", workflow="sync", source="schedule",
                due_at=now + timedelta(milliseconds=n), data={"params": {"n": n}}, **keys)
            for n, keys in enumerate([
                {"flow_key": "sync:a", "flow_limit": 1},
                {"flow_key": "sync:a", "flow_limit": 1},
                {"flow_key": "sync:t", "throttle_key": "sync:t", "throttle_limit": 1,
                 "throttle_ms": 3_600_000},
                {"flow_key": "sync:t", "throttle_key": "sync:t", "throttle_limit": 1,
                 "throttle_ms": 3_600_000}])])
        await storage.jobs.enqueue([Job(id=f"{now:%s}000x000000000000000009", workflow="sync",
                                        source="schedule", due_at=later,
                                        data={"params": {"n": 9}}, debounce_key="sync:d"),
                                    Job(id=f"{now:%s}000x000000000000000005", workflow="sync",
                                        source="schedule", due_at=later,
                                        data={"params": {"n": 5}}, flow_key="sync:t",
                                        throttle_key="sync:t", throttle_limit=1,
                                        throttle_ms=3_600_000)])
        claimed = await storage.jobs.claim("w", now + timedelta(seconds=1), later, 10)
        assert sorted(job.data["params"]["n"] for job in claimed) == [0, 2]
    finally:
        await storage.close()


def test_jobs_list_says_why_a_job_waits(config: Path, storage_url: str) -> None:
    asyncio.run(_waiting_jobs(storage_url))
    where = ("--config", str(config), "--database", storage_url)
    listed = invoke("jobs", "list", "--workflow", "sync", "--status", "pending", *where).stdout
    rows = [json.loads(line) for line in invoke(
        "jobs", "list", "--json", "--workflow", "sync", "--status", "pending",
        *where).stdout.splitlines()]
    lines = {row["data"]["params"]["n"]: row["waits"] for row in rows if "data" in row}
    assert lines == {1: "concurrency: 1 of 1 running",
                     3: "throttle: 1 of 1 started in the last 3600s",
                     9: "debounced: runs once no job of its key is scheduled for its period",
                     5: ""}  # due later as scheduled: its time, not its throttle
    assert "waits (concurrency: 1 of 1 running)" in listed
    assert "keys throttle t (1 per 3600s)" in listed
