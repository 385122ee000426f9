"""`http_request`'s `idempotency_key` against a real upstream on loopback, on both
backends: the header sent (under its default name or another), and hostile keys (line
breaks, control characters, empty, huge) refused before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Serve
from support import Upstream, upstream

CONFIG = """
kind: api_workflow
name: pay
expose: true
auth: none
params:
  url: {type: text}
  key: {type: text}
  headers: {type: object, optional: true, default: {}}
steps:
  - id: default_name
    action: http_request
    method: POST
    url: "{{ params.url }}/charges"
    idempotency_key: "{{ params.key }}"
  - id: other_name
    action: http_request
    method: POST
    url: "{{ params.url }}/charges"
    headers: "{{ params.headers }}"
    idempotency_key: {key: "charge-{{ params.key }}", header: X-Request-Key}
  - action: return_data
    data: {status: "{{ steps.other_name.status }}"}
"""


@pytest.fixture
def up() -> Iterator[Upstream]:
    with upstream() as found:
        yield found


async def test_the_key_is_sent_as_a_header(serve: Serve, storage_url: str,
                                           up: Upstream) -> None:
    async with serve(CONFIG, storage_url) as gw:
        response = await gw.client.post("/api/1.1/wf/pay", json={"url": up.url,
                                                                "key": "order-17"})
        assert response.status_code == 200, response.text
    assert [h.get("idempotency-key") for h in up.headers] == ["order-17", None]
    assert up.headers[1]["x-request-key"] == "charge-order-17"


@pytest.mark.parametrize(("key", "why"), [
    ("a\r\nX-Evil: 1", "no line breaks"),
    ("a\nb", "no line breaks"),
    ("a\x00b", "no line breaks, control characters"),
    ("   ", "rendered empty"),
    ("k" * 256, "at most 255 are sent"),
    ("é-accented", "printable ASCII"),
])
async def test_a_hostile_key_is_refused_and_nothing_is_sent(
        serve: Serve, storage_url: str, up: Upstream, key: str, why: str) -> None:
    async with serve(CONFIG, storage_url) as gw:
        response = await gw.client.post("/api/1.1/wf/pay", json={"url": up.url, "key": key})
    assert response.status_code == 400, response.text
    body = response.json()["body"]
    assert body["status"] == "INVALID_DATA" and "idempotency_key" in body["message"]
    assert why in body["message"]
    assert key.strip() == "" or key not in body["message"]  # a caller's value, not quoted
    assert up.headers == []


async def test_a_header_given_twice_when_it_runs_is_an_error(
        serve: Serve, storage_url: str, up: Upstream) -> None:
    async with serve(CONFIG, storage_url) as gw:
        response = await gw.client.post("/api/1.1/wf/pay", json={
            "url": up.url, "key": "k1", "headers": {"x-request-key": "mine"}})
        assert response.status_code == 500, response.text
        assert gw.storage is not None
        await gw.storage.runs.flush_runs()
        run = await gw.storage.runs.get_run(response.headers["x-run-id"])
        assert run is not None
        message = run["error"]["message"]
        assert "X-Request-Key is given by both headers and idempotency_key" in message
    assert len(up.headers) == 1  # the first step's call only
