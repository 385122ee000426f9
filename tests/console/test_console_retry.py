"""The job page's retry form, in-process on both backends: it shows which steps earlier
runs checkpointed, offers to resume at the failed step or to run again from a chosen step
(its checkpoints and later ones forgotten), and refuses a step that is no number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from console_support import admin_key, config, form_value, serving, sign_in

from gateway.core.ids import new_id
from gateway.storage import Job, Storage
from gateway.storage.contract import Checkpoint


async def failed_charge(storage: Storage) -> Job:
    """A failed job of `charge-card` (two steps), with checkpoints at both of its steps, as
    if its runs had called out there."""
    now = datetime.now(UTC)
    one = Job(new_id(now), "charge-card", "schedule", now - timedelta(minutes=1),
              data={"params": {"amount": 5}, "identity": {"kind": "admin"}})
    await storage.jobs.enqueue([one])
    assert [j.id for j in await storage.jobs.claim("t", now, now + timedelta(minutes=1), 10)
            ] == [one.id]
    assert await storage.jobs.finish(one.id, "t", "failed", now, "run-9", "ERROR: no")
    await storage.jobs.checkpoint(one.id, Checkpoint("1", "set", "check", "run-7", now, {}))
    await storage.jobs.checkpoint(one.id, Checkpoint("2", "fail", "refuse", "run-8", now,
                                                     None, kept=False))
    return one


async def places(storage: Storage, job_id: str) -> list[str]:
    return sorted(c.place for c in await storage.jobs.checkpoints(job_id))


async def test_the_job_page_shows_checkpoints_and_retries_from_a_step(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        failed = await failed_charge(storage)
        page = await client.get(f"/console/jobs/{failed.id}")
        assert page.status_code == 200
        text = page.text
        assert "Checkpointed steps" in text and 'href="/console/runs/run-7"' in text
        assert "no: its result was too large to keep" in text
        assert '<option value="" selected>resuming at the failed step (2 step(s) restored)' \
            in text
        assert '<option value="1">from the start (step 1: set check)</option>' in text
        assert '<option value="2">from step 2 (fail refuse)</option>' in text
        token = form_value(text, "csrf")
        url = f"/console/jobs/{failed.id}/retry"

        for bad in ("abc", "0", "-1", "²", "99999"):
            answer = await client.post(url, data={"csrf": token, "from_step": bad})
            assert answer.headers["location"].endswith("?done=bad-step")
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "failed"
        assert await places(storage, failed.id) == ["1", "2"]

        answer = await client.post(url, data={"csrf": token, "from_step": "2"})
        assert answer.status_code == 303 and answer.headers["location"].endswith(
            "?done=retry-from")
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "pending"
        assert await places(storage, failed.id) == ["1"]
        shown = await client.get(answer.headers["location"])
        assert "the steps from the one chosen run again" in shown.text
        # pending now: not retried again, and nothing more is forgotten
        answer = await client.post(url, data={"csrf": token, "from_step": "1"})
        assert answer.headers["location"].endswith("?done=not-retried")
        assert await places(storage, failed.id) == ["1"]


async def test_the_default_choice_resumes_and_keeps_every_checkpoint(
        tmp_path: Path, storage_url: str) -> None:
    async with serving(config(tmp_path), storage_url) as (client, storage):
        await sign_in(client, await admin_key(storage))
        failed = await failed_charge(storage)
        token = form_value((await client.get(f"/console/jobs/{failed.id}")).text, "csrf")
        answer = await client.post(f"/console/jobs/{failed.id}/retry",
                                   data={"csrf": token, "from_step": ""})
        assert answer.headers["location"].endswith("?done=retry")
        stored = await storage.jobs.get_job(failed.id)
        assert stored is not None and stored.status == "pending"
        assert await places(storage, failed.id) == ["1", "2"]
