"""Redirect responses (`return_redirect`, `error_redirect`): a 302 with `Location` and an
empty body, only to targets `redirects.allowed` lists; refused at load time when the target
is written out, at run time (500, nothing redirected) when a template gives it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import Serve

from gateway.compiler.loader import load
from gateway.core.errors import ConfigError
from gateway.runtime.redirect import query_pairs, refusal

SETTINGS = """
kind: settings
redirects:
  allowed: ["https://app.example.com/", "https://example.org:8443/return"]
  max_url_length: 2048
"""

CONFIG = SETTINGS + """
---
kind: data_type
name: order
fields: {total: {type: number}}
---
kind: api_workflow
name: paid
expose: true
auth: none
params:
  total: {type: number}
  note: {type: text, optional: true}
  tags: {type: text, list: true, optional: true}
  extra: {type: object, optional: true}
steps:
  - {id: order, action: create_thing, type: order, fields: {total: "{{ params.total }}"}}
  - action: return_redirect
    url: "https://app.example.com/version-test/done?from=gateway#top"
    data:
      order: "{{ steps.order._id }}"
      total: "{{ params.total }}"
      note: "{{ params.note }}"
      tags: "{{ params.tags }}"
      ok: true
      extra: "{{ params.extra }}"
---
kind: api_workflow
name: go
expose: true
auth: none
params:
  to: {type: text}
  data: {type: object, optional: true}
steps:
  - action: return_redirect
    url: "{{ params.to }}"
    data: "{{ params.data or {} }}"
---
kind: api_workflow
name: checkout
expose: true
auth: none
error_redirect: https://app.example.com/failed
params:
  amount: {type: number}
steps:
  - {action: fail, status: 402, code: DECLINED, message: "card declined\\r\\nSet-Cookie: x=1"}
---
kind: api_workflow
name: breaks
expose: true
auth: none
error_redirect: "{{ request.query.back }}"
steps:
  - {action: get_thing, type: order, thing: "{{ 1 / 0 }}"}
"""


def _query(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))


async def _post(gateway: Any, name: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> Any:
    return await gateway.client.post(f"/api/1.1/wf/{name}", json=body or {}, params=params)


async def test_return_redirect_sends_the_data_as_query_parameters(serve: Serve,
                                                                  storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        answer = await _post(gateway, "paid", {"total": 12.5, "note": "a&b=c\r\nLocation: x",
                                               "tags": ["x", "y z"], "extra": {"k": 1}})
        assert answer.status_code == 302, answer.text
        assert answer.content == b""
        assert answer.headers["content-length"] == "0"
        assert "content-type" not in answer.headers
        assert answer.headers["x-run-id"]
        location = answer.headers["location"]
        assert "\r" not in location and "\n" not in location and " " not in location
        parts = urlsplit(location)
        assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
            "https", "app.example.com", "/version-test/done", "top")
        query = _query(location)
        assert query["from"] == "gateway"
        assert query["total"] == "12.5" and query["ok"] == "true"
        assert query["note"] == "a&b=c\r\nLocation: x"  # percent-encoded on the wire
        assert query["tags"] == "x,y z" and query["extra.k"] == "1"
        assert query["order"]  # the record the run made


@pytest.mark.parametrize("target", [
    "https://evil.com/",
    "https://app.example.com.evil.com/",
    "https://app.example.com@evil.com/",
    "https://user:pw@app.example.com/",
    "http://app.example.com/",  # another scheme
    "https://app.example.com:444/",  # another port
    "https://example.org:8443/returns",  # not a segment of /return
    "https://example.org:8443/return/../admin",
    "https://example.org:8443/return/%2e%2e/admin",
    "https://example.org:8443/return/x%2f..%2f..%2fadmin",  # decoded by a server behind it
    "https://example.org:8443/return/%252e%252e/admin",
    "https://example.org:8443/return/..;/admin",
    "https://example.org:8443/return/x%5c..%5cadmin",
    "//evil.com/",
    "/relative",
    "javascript:alert(1)",
    "JaVaScRiPt://app.example.com/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https:\\\\evil.com\\",
    "https://app.example.com\\@evil.com/",
    "https://app.example.com/\r\nSet-Cookie: x=1",
    "https://app.example.com/\tx",
    "https://app.example.com/é",
    " https://app.example.com/",
    "mailto:ops@app.example.com",
])
async def test_a_templated_target_not_allowed_is_refused_at_run_time(
        serve: Serve, storage_url: str, target: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        answer = await _post(gateway, "go", {"to": target})
        assert answer.status_code == 500, answer.text
        assert "location" not in answer.headers
        body = answer.json()["body"]
        assert body["status"] == "REDIRECT_NOT_ALLOWED"
        assert "redirect" in body["message"]


@pytest.mark.parametrize("target", ["https://app.example.com/", "https://APP.example.com:443/x",
                                    "https://example.org:8443/return",
                                    "https://example.org:8443/return/ok?a=1"])
async def test_allowed_targets(serve: Serve, target: str) -> None:
    async with serve(CONFIG) as gateway:
        answer = await _post(gateway, "go", {"to": target, "data": {"a": "1"}})
        assert answer.status_code == 302, answer.text
        assert answer.headers["location"].startswith(target.split("?")[0])


async def test_a_huge_data_dict_is_refused_with_a_clear_error(serve: Serve) -> None:
    async with serve(CONFIG) as gateway:
        data = {f"k{i}": "v" * 50 for i in range(100)}
        answer = await _post(gateway, "go", {"to": "https://app.example.com/", "data": data})
        assert answer.status_code == 500
        assert "location" not in answer.headers
        body = answer.json()["body"]
        assert body["status"] == "REDIRECT_TOO_LONG"
        assert "2048" in body["message"] and "redirects.max_url_length" in body["message"]


async def test_an_error_redirects_with_status_code_and_message(serve: Serve,
                                                               storage_url: str) -> None:
    async with serve(CONFIG, storage_url) as gateway:
        answer = await _post(gateway, "checkout", {"amount": 5})
        assert answer.status_code == 302 and answer.content == b""
        location = answer.headers["location"]
        assert location.startswith("https://app.example.com/failed?")
        assert "\r" not in location and "\n" not in location
        assert _query(location) == {"statusCode": "402",
                                    "message": "card declined\r\nSet-Cookie: x=1"}
        assert "set-cookie" not in answer.headers
        missing = await _post(gateway, "checkout", {})  # a 400 before the steps
        assert missing.status_code == 302
        assert _query(missing.headers["location"])["statusCode"] == "400"


async def test_a_templated_error_target_is_checked_at_run_time(serve: Serve) -> None:
    async with serve(CONFIG) as gateway:
        good = await _post(gateway, "breaks", params={"back": "https://app.example.com/x"})
        assert good.status_code == 302
        query = _query(good.headers["location"])
        assert query["statusCode"] == "500"
        assert query["message"] == "The workflow failed; see the run log for details"
        bad = await _post(gateway, "breaks", params={"back": "https://evil.com/"})
        assert bad.status_code == 500 and "location" not in bad.headers
        assert bad.json()["body"]["status"] == "REDIRECT_NOT_ALLOWED"


async def test_errors_before_the_run_are_not_redirected(serve: Serve) -> None:
    async with serve(CONFIG) as gateway:
        wrong_method = await gateway.client.get("/api/1.1/wf/checkout")
        assert wrong_method.status_code == 405 and "location" not in wrong_method.headers


def _load(tmp_path: Path, text: str, settings: str = SETTINGS) -> list[tuple[str, str]]:
    path = tmp_path / "wf.yaml"
    path.write_text(settings + "---\n" + textwrap.dedent(text).strip())
    try:
        load([path])
    except ConfigError as exc:
        return [(d.code, d.pointer) for d in exc.diagnostics]
    return []


@pytest.mark.parametrize("target", ["https://evil.com/", "https://app.example.com.evil.com/",
                                    "https://app.example.com@evil.com/", "javascript:alert(1)",
                                    "//evil.com", "https:\\\\evil.com"])
def test_a_static_target_not_allowed_is_refused_at_load_time(tmp_path: Path,
                                                             target: str) -> None:
    found = _load(tmp_path, f"""
        kind: api_workflow
        name: out
        auth: none
        error_redirect: '{target}'
        steps:
          - {{action: return_redirect, url: '{target}'}}
        """)
    assert found == [("redirect.not-allowed", "/error_redirect"),
                     ("redirect.not-allowed", "/steps/0/url")]


def test_without_settings_no_redirect_is_allowed(tmp_path: Path) -> None:
    found = _load(tmp_path, """
        kind: api_workflow
        name: out
        auth: none
        steps: [{action: return_redirect, url: "https://app.example.com/"}]
        """, settings="kind: settings\n")
    assert found == [("redirect.not-allowed", "/steps/0/url")]


def test_a_custom_event_cannot_redirect(tmp_path: Path) -> None:
    found = _load(tmp_path, """
        kind: custom_event
        name: ev
        steps: [{action: return_redirect, url: "https://app.example.com/"}]
        """)
    assert ("event.bad-return", "/steps/0/action") in found


def test_flattening_and_refusal_rules() -> None:
    assert query_pairs({"a": None, "b": [1, None, True], "c": {"d": {"e": "f"}},
                        "g": [{"h": 1}]}) == [("b", "1,true"), ("c.d.e", "f"),
                                              ("g", '{"h":1}')]
    assert refusal("https://app.example.com/x", ["https://app.example.com"]) is None
    assert refusal("https://app.example.com", ["https://app.example.com/"]) is None
    assert refusal("https://app.example.com/x", []) is not None
