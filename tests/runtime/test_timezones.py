"""`timezone` on API workflows and database triggers: dates without an offset are read in
it, `now` is shown in it and `format_date` formats in it (or in the zone it is given);
without one, everything stays UTC. Through the served app."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Serve
from support import Clock

from gateway.compiler.loader import load
from gateway.core.errors import ConfigError

NOON = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 14:00 in Paris (summer time)

CONFIG = """
kind: api_workflow
name: paris
expose: true
auth: none
timezone: Europe/Paris
params:
  d: {type: date, optional: true}
steps:
  - action: return_data
    data:
      d: "{{ params.d }}"
      parsed: "{{ parse_date('2026-07-01') }}"
      hour: "{{ now.hour }}"
      now_default: "{{ now | format_date }}"
      now_ny: "{{ now | format_date('%H:%M %Z', 'America/New_York') }}"
      now_local: "{{ now | format_date('%H:%M') }}"
---
kind: api_workflow
name: utc
expose: true
auth: none
params:
  d: {type: date, optional: true}
steps:
  - action: return_data
    data:
      d: "{{ params.d }}"
      parsed: "{{ parse_date('2026-07-01') }}"
      hour: "{{ now.hour }}"
      now_default: "{{ now | format_date }}"
      now_tokyo: "{{ now | format_date('%H:%M', 'Asia/Tokyo') }}"
---
kind: api_workflow
name: caller-zone
expose: true
auth: none
timezone: "{{ request.headers.get('x-timezone') }}"
params:
  d: {type: date}
steps:
  - action: return_data
    data: {d: "{{ params.d }}", hour: "{{ now.hour }}"}
---
kind: api_workflow
name: strict-zone
expose: true
auth: none
timezone: "{{ request.headers['x-timezone'] }}"
steps:
  - action: return_data
    data: {hour: "{{ now.hour }}"}
"""


async def _post(gateway: Any, name: str, body: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
    return await gateway.client.post(f"/api/1.1/wf/{name}", json=body or {},
                                     headers=headers or {})


async def test_a_workflow_zone_reads_dates_without_offset_and_shows_now(
        serve: Serve, storage_url: str) -> None:
    clock = Clock(NOON)
    async with serve(CONFIG, storage_url, clock=clock, monotonic=clock.monotonic) as gateway:
        answer = await _post(gateway, "paris", {"d": "2026-07-01T12:00:00"})
        assert answer.status_code == 200, answer.text
        got = answer.json()["response"]
        assert got["d"] == "2026-07-01T10:00:00.000000Z"  # 12:00 in Paris
        assert got["parsed"] == "2026-06-30T22:00:00.000000Z"  # midnight in Paris
        assert got["hour"] == 14
        assert got["now_default"] == "2026-07-01T14:00:00+0200"
        assert got["now_ny"] == "08:00 EDT"
        assert got["now_local"] == "14:00"
        with_offset = await _post(gateway, "paris", {"d": "2026-07-01T12:00:00Z"})
        assert with_offset.json()["response"]["d"] == "2026-07-01T12:00:00.000000Z"
        # a workflow without a zone, after one with: UTC, as before (nothing leaks)
        plain = (await _post(gateway, "utc", {"d": "2026-07-01T12:00:00"})).json()["response"]
        assert plain == {"d": "2026-07-01T12:00:00.000000Z",
                         "parsed": "2026-07-01T00:00:00.000000Z", "hour": 12,
                         "now_default": "2026-07-01T12:00:00Z", "now_tokyo": "21:00"}


async def test_a_zone_from_the_request(serve: Serve) -> None:
    clock = Clock(NOON)
    async with serve(CONFIG, clock=clock, monotonic=clock.monotonic) as gateway:
        tokyo = await _post(gateway, "caller-zone", {"d": "2026-07-01T09:00"},
                            {"x-timezone": "Asia/Tokyo"})
        assert tokyo.json()["response"] == {"d": "2026-07-01T00:00:00.000000Z", "hour": 21}
        none = await _post(gateway, "caller-zone", {"d": "2026-07-01T09:00"})
        assert none.json()["response"] == {"d": "2026-07-01T09:00:00.000000Z", "hour": 12}


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "UTC%00",
                                  "Europe/" + "x" * 200, "America", "/etc/localtime",
                                  "Europe//Paris"])
async def test_an_invalid_zone_from_the_request_is_invalid_data(serve: Serve,
                                                                zone: str) -> None:
    async with serve(CONFIG) as gateway:
        answer = await _post(gateway, "caller-zone", {"d": "2026-07-01T09:00"},
                             {"x-timezone": zone})
        assert answer.status_code == 400, answer.text
        body = answer.json()["body"]
        assert body["status"] == "INVALID_DATA"
        assert "is not an IANA time zone" in body["message"]
        assert zone[:20] in body["message"]


async def test_a_zone_template_that_fails_is_the_callers_invalid_data(serve: Serve) -> None:
    async with serve(CONFIG) as gateway:
        answer = await _post(gateway, "strict-zone")  # no x-timezone header
        assert answer.status_code == 400
        assert answer.json()["body"]["status"] == "INVALID_DATA"
        assert "could not be read" in answer.json()["body"]["message"]
        ok = await _post(gateway, "strict-zone", headers={"x-timezone": "UTC"})
        assert ok.status_code == 200


DST = """
kind: api_workflow
name: dst
expose: true
auth: none
timezone: Europe/Paris
params:
  d: {type: date}
steps:
  - action: return_data
    data: {d: "{{ params.d }}", again: "{{ params.d | format_date('%H:%M%z') }}"}
"""


@pytest.mark.parametrize(("local", "utc", "shown"), [
    # 02:30 does not exist on 29 March 2026 (02:00 -> 03:00): read with the offset before
    # the change (+01:00, fold=0), it is 01:30 UTC, 03:30 in summer time
    ("2026-03-29T02:30:00", "2026-03-29T01:30:00.000000Z", "03:30+0200"),
    # 02:30 happens twice on 25 October 2026 (03:00 -> 02:00): the first one (+02:00)
    ("2026-10-25T02:30:00", "2026-10-25T00:30:00.000000Z", "02:30+0200"),
    ("2026-10-25T02:30:00+01:00", "2026-10-25T01:30:00.000000Z", "02:30+0100"),
])
async def test_local_times_in_dst_changes_follow_zoneinfo_fold_zero(
        serve: Serve, local: str, utc: str, shown: str) -> None:
    async with serve(DST) as gateway:
        answer = await _post(gateway, "dst", {"d": local})
        assert answer.json()["response"] == {"d": utc, "again": shown}


def test_an_unknown_static_zone_is_a_located_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent("""
        kind: api_workflow
        name: nowhere
        auth: none
        timezone: Europe/Pariss
        steps: [{action: terminate}]
        ---
        kind: data_type
        name: lead
        fields: {name: {type: text}}
        ---
        kind: database_trigger
        name: lead-made
        type: lead
        timezone: Mars/Base
        steps: [{action: terminate}]
        """).strip())
    with pytest.raises(ConfigError) as caught:
        load([path])
    found = [(d.code, d.pointer, d.line) for d in caught.value.diagnostics]
    assert found == [("timezone.unknown", "/timezone", 4), ("timezone.unknown", "/timezone", 14)]
    assert "'Europe/Pariss' is not an IANA time zone" in caught.value.diagnostics[0].message


TRIGGER = """
kind: data_type
name: event
fields:
  name: {type: text}
  at: {type: date}
  hour: {type: number}
---
kind: api_workflow
name: make
expose: true
auth: none
params: {name: {type: text}}
steps:
  - {id: made, action: create_thing, type: event, fields: {name: "{{ params.name }}"}}
  - {action: return_data, data: {id: "{{ steps.made._id }}"}}
---
kind: database_trigger
name: stamp
type: event
events: [create]
timezone: America/New_York
steps:
  - action: make_changes
    type: event
    thing: "{{ after._id }}"
    fields: {at: "{{ parse_date('2026-07-01T09:00') }}", hour: "{{ now.hour }}"}
"""


async def test_a_trigger_runs_in_its_zone(serve: Serve, storage_url: str) -> None:
    clock = Clock(NOON)
    async with serve(TRIGGER, storage_url, clock=clock, monotonic=clock.monotonic) as gateway:
        answer = await _post(gateway, "make", {"name": "x"})
        assert answer.status_code == 200, answer.text
        assert gateway.storage is not None
        made = answer.json()["response"]["id"]
        async with asyncio.timeout(20):
            while True:
                record = await gateway.storage.records.get("event", made)
                if record is not None and record.get("hour") is not None:
                    break
                await asyncio.sleep(0.05)
        assert record["hour"] == 8  # noon UTC is 08:00 in New York
        assert record["at"] == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)
