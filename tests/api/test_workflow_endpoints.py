"""HTTP behaviour of workflow endpoints: parameters from every source, every type, and the
one error envelope for every error source (in-process, through the app's lifespan)."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Serve, served

from gateway.core.encoding import encode

ECHO = """
kind: api_workflow
name: echo
expose: true
auth: none
params:
  t: {type: text, optional: true}
  n: {type: number, optional: true}
  i: {type: integer, optional: true}
  b: {type: boolean, optional: true}
  d: {type: date, optional: true}
  o: {type: object, optional: true}
  tl: {type: text, list: true, optional: true}
  nl: {type: number, list: true, optional: true}
  il: {type: integer, list: true, optional: true}
  bl: {type: boolean, list: true, optional: true}
  dl: {type: date, list: true, optional: true}
  ol: {type: object, list: true, optional: true}
  q: {type: text, in: query, optional: true}
steps:
  - action: return_data
    data:
      params: "{{ params }}"
      d_hour: "{{ params.d.hour if params.d else none }}"
      d_offset: "{{ params.d.utcoffset().total_seconds() if params.d else none }}"
      dl_hours: "{{ params.dl | map(attribute='hour') | list }}"
"""

REQUIRED = """
kind: api_workflow
name: needs
expose: true
auth: none
params:
  name: {type: text}
  count: {type: integer}
  size: {type: number, optional: true, default: 2.5}
  tags: {type: text, list: true, optional: true, default: [a, b]}
  note: {type: text, optional: true}
  many: {type: integer, list: true, optional: true}
steps:
  - action: return_data
    data: "{{ params }}"
"""

GET = """
kind: api_workflow
name: lookup
expose: true
auth: none
method: GET
params:
  q: {type: text}
  page: {type: integer, optional: true, default: 1}
  tags: {type: text, list: true, optional: true}
steps:
  - action: return_data
    data: "{{ params }}"
"""


@contextlib.asynccontextmanager
async def client_for(tmp_path: Path, *documents: str) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for an app built from `documents` on a fresh SQLite file."""
    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "workflows.yaml").write_text(
        "\n---\n".join(textwrap.dedent(doc).strip() for doc in documents))
    async with served(config, home=tmp_path) as gateway:
        yield gateway.client


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(tmp_path, ECHO, REQUIRED, GET) as client:
        yield client


def envelope(response: httpx.Response, status: int, code: str) -> str:
    """Assert the one error shape; return the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"statusCode", "body"}
    assert body["statusCode"] == status
    assert body["body"]["status"] == code
    assert isinstance(body["body"]["message"], str) and body["body"]["message"]
    assert set(body["body"]) <= {"status", "message", "run_id"}
    return str(body["body"]["message"])


def response_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["response"]


# --- sources ----------------------------------------------------------------------------------


async def test_json_body_every_type(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/echo", json={
        "t": "hello", "n": 2.5, "i": 7, "b": True, "d": "2024-05-01T14:30:00+02:00",
        "o": {"a": [1, {"b": None}]},
    })
    got = response_of(response)
    params = got["params"]
    assert params["t"] == "hello"
    assert params["n"] == 2.5
    assert params["i"] == 7 and type(params["i"]) is int
    assert params["b"] is True
    assert params["d"] == "2024-05-01T12:30:00.000000Z"
    assert got["d_hour"] == 12 and got["d_offset"] == 0
    assert params["o"] == {"a": [1, {"b": None}]}


async def test_json_body_lists_of_each_type(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/echo", json={
        "tl": ["a", "b"], "nl": [1.5, "2"], "il": [1, "2", 3.0], "bl": [True, "no", "yes"],
        "dl": ["2024-01-01T00:00:00Z", "2024-01-01T05:00:00-03:00"],
        "ol": [{"x": 1}, {"y": 2}],
    })
    got = response_of(response)
    params = got["params"]
    assert params["tl"] == ["a", "b"]
    assert params["nl"] == [1.5, 2.0]
    assert params["il"] == [1, 2, 3] and all(type(v) is int for v in params["il"])
    assert params["bl"] == [True, False, True]
    assert params["dl"] == ["2024-01-01T00:00:00.000000Z", "2024-01-01T08:00:00.000000Z"]
    assert got["dl_hours"] == [0, 8]
    assert params["ol"] == [{"x": 1}, {"y": 2}]


async def test_urlencoded_form(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/echo", content=(
        "t=hi+there&n=3&i=4&b=yes&d=2024-05-01T10:00:00-01:00&o=%7B%22k%22%3A1%7D"
        "&tl=x&tl=y&il=1&il=2&bl=no&bl=true"
    ), headers={"content-type": "application/x-www-form-urlencoded"})
    params = response_of(response)["params"]
    assert params["t"] == "hi there"
    assert params["n"] == 3 and type(params["n"]) in (int, float)
    assert params["i"] == 4 and type(params["i"]) is int
    assert params["b"] is True
    assert params["d"] == "2024-05-01T11:00:00.000000Z"
    assert params["o"] == {"k": 1}
    assert params["tl"] == ["x", "y"]
    assert params["il"] == [1, 2]
    assert params["bl"] == [False, True]


async def test_multipart_form(echo: httpx.AsyncClient) -> None:
    response = await echo.post(
        "/api/1.1/wf/echo",
        data={"t": "multi", "i": "12", "b": "false", "tl": ["p", "q", "r"]},
        files={"ignored": (None, b"")},
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    params = response_of(response)["params"]
    assert params["t"] == "multi"
    assert params["i"] == 12
    assert params["b"] is False
    assert params["tl"] == ["p", "q", "r"]


async def test_multipart_form_with_a_file_part(echo: httpx.AsyncClient) -> None:
    response = await echo.post(
        "/api/1.1/wf/echo", data={"t": "with file"},
        files={"o": ("o.json", b'{"k": 1}', "application/json")},
    )
    params = response_of(response)["params"]
    assert params["t"] == "with file"
    assert params["o"] == {"k": 1}


async def test_single_form_value_for_a_list_is_a_list_of_one(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/echo", data={"tl": "only", "il": "[1, 2, 3]"})
    params = response_of(response)["params"]
    assert params["tl"] == ["only"]
    assert params["il"] == [1, 2, 3]


async def test_in_query_param_on_post(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/echo?q=from-query&t=ignored", json={"n": 1})
    params = response_of(response)["params"]
    assert params["q"] == "from-query"
    # `t` is not declared `in: query`, so the query string does not supply it on a POST.
    assert params["t"] is None


async def test_get_takes_every_param_from_the_query(echo: httpx.AsyncClient) -> None:
    response = await echo.get("/api/1.1/wf/lookup?q=ada&page=3&tags=x&tags=y")
    assert response_of(response) == {"q": "ada", "page": 3, "tags": ["x", "y"]}


async def test_get_defaults_and_missing(echo: httpx.AsyncClient) -> None:
    assert response_of(await echo.get("/api/1.1/wf/lookup?q=z")) == {
        "q": "z", "page": 1, "tags": []}
    message = envelope(await echo.get("/api/1.1/wf/lookup"), 400, "MISSING_DATA")
    assert message == "Missing parameter for workflow lookup: parameter q"


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("false", False), ("yes", True), ("no", False), ("True", True),
    ("NO", False),
])
async def test_boolean_words(echo: httpx.AsyncClient, value: str, expected: bool) -> None:
    response = await echo.post("/api/1.1/wf/echo", data={"b": value})
    assert response_of(response)["params"]["b"] is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01", "2024-05-01T00:00:00.000000Z"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000000Z"),
    ("2024-05-01T12:00:00", "2024-05-01T12:00:00.000000Z"),
    ("2024-05-01T12:00:00.250+05:30", "2024-05-01T06:30:00.250000Z"),
    ("2024-12-31T23:30:00-01:00", "2025-01-01T00:30:00.000000Z"),
])
async def test_dates_become_utc(echo: httpx.AsyncClient, value: str, expected: str) -> None:
    got = response_of(await echo.post("/api/1.1/wf/echo", json={"d": value}))
    assert got["params"]["d"] == expected
    assert got["d_offset"] == 0


# --- missing, optional, default, invalid ------------------------------------------------------


async def test_optional_and_default(echo: httpx.AsyncClient) -> None:
    got = response_of(await echo.post("/api/1.1/wf/needs", json={"name": "x", "count": 1}))
    assert got == {"name": "x", "count": 1, "size": 2.5, "tags": ["a", "b"], "note": None,
                   "many": []}


async def test_missing_parameter_has_bubbles_wording(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/needs", json={"name": "x"})
    message = envelope(response, 400, "MISSING_DATA")
    assert message == "Missing parameter for workflow needs: parameter count"
    assert "X-Run-Id" in response.headers


async def test_empty_value_of_a_non_text_parameter_is_missing(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/needs", data={"name": "x", "count": ""})
    assert envelope(response, 400, "MISSING_DATA") == (
        "Missing parameter for workflow needs: parameter count")


@pytest.mark.parametrize(("body", "name", "type_"), [
    ({"name": "x", "count": "many"}, "count", "integer"),
    ({"name": "x", "count": 1.5}, "count", "integer"),
    ({"name": "x", "count": True}, "count", "integer"),
    ({"name": "x", "count": 1, "size": "big"}, "size", "number"),
    ({"name": "x", "count": 1, "size": "NaN"}, "size", "number"),
    ({"name": {"a": 1}, "count": 1}, "name", "text"),
    ({"name": ["a"], "count": 1}, "name", "text"),
    ({"name": "x", "count": 1, "many": [1, "two"]}, "many", "list of integer"),
    ({"name": "x", "count": 1, "many": {"a": 1}}, "many", "list of integer"),
])
async def test_invalid_data_names_parameter_and_type(
        echo: httpx.AsyncClient, body: dict[str, Any], name: str, type_: str) -> None:
    message = envelope(await echo.post("/api/1.1/wf/needs", json=body), 400, "INVALID_DATA")
    assert message == f"Invalid value for parameter {name} (must be {type_})"


@pytest.mark.parametrize(("body", "type_"), [
    ({"b": "maybe"}, "boolean"), ({"d": "yesterday"}, "date"), ({"d": "2024-13-01"}, "date"),
    ({"o": "[1]"}, "object"), ({"o": "not json"}, "object"), ({"o": [1, 2]}, "object"),
])
async def test_invalid_scalar_types(echo: httpx.AsyncClient, body: dict[str, Any],
                                    type_: str) -> None:
    (name,) = body
    message = envelope(await echo.post("/api/1.1/wf/echo", json=body), 400, "INVALID_DATA")
    assert message == f"Invalid value for parameter {name} (must be {type_})"


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"{", b'{"a": }', b"\xff\xfe", b"{'single': 1}"])
async def test_malformed_json_body(echo: httpx.AsyncClient, content: bytes) -> None:
    response = await echo.post("/api/1.1/wf/echo", content=content,
                               headers={"content-type": "application/json"})
    message = envelope(response, 400, "INVALID_BODY")
    assert "JSON" in message


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"42", b"null"])
async def test_json_body_that_is_not_an_object(echo: httpx.AsyncClient, content: bytes) -> None:
    response = await echo.post("/api/1.1/wf/echo", content=content,
                               headers={"content-type": "application/json"})
    assert "object" in envelope(response, 400, "INVALID_BODY")


@pytest.mark.parametrize("content", [
    b"garbage",
    b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n",
])
async def test_malformed_multipart_body(echo: httpx.AsyncClient, content: bytes) -> None:
    response = await echo.post("/api/1.1/wf/echo", content=content,
                               headers={"content-type": "multipart/form-data; boundary=x"})
    assert "multipart" in envelope(response, 400, "INVALID_BODY")


async def test_truncated_multipart_body(echo: httpx.AsyncClient) -> None:
    content = b'--x\r\nContent-Disposition: form-data; name="t"\r\n\r\nvalue'
    response = await echo.post("/api/1.1/wf/echo", content=content,
                               headers={"content-type": "multipart/form-data; boundary=x"})
    envelope(response, 400, "INVALID_BODY")


async def test_empty_body_means_no_parameters(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/needs", content=b"",
                               headers={"content-type": "application/json"})
    envelope(response, 400, "MISSING_DATA")


LIMITED = """
kind: settings
limits: {max_body_bytes: 64}
"""


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with client_for(tmp_path, ECHO, LIMITED) as client:
        at_limit = json.dumps({"t": "x" * 55}).encode()
        assert len(at_limit) == 64
        assert (await client.post("/api/1.1/wf/echo", content=at_limit)).status_code == 200
        over = json.dumps({"t": "x" * 56}).encode()
        response = await client.post("/api/1.1/wf/echo", content=over)
        assert "64" in envelope(response, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"t": "'
        for _ in range(10):
            yield b"x" * 10
        yield b'"}'

    async with client_for(tmp_path, ECHO, LIMITED) as client:
        request = client.build_request("POST", "/api/1.1/wf/echo", content=chunks())
        assert "content-length" not in request.headers
        envelope(await client.send(request), 413, "PAYLOAD_TOO_LARGE")


async def test_a_body_in_several_chunks_is_read_whole(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"t": "'
        for _ in range(4):
            yield b"x" * 10
        yield b'"}'

    async with client_for(tmp_path, ECHO, LIMITED) as client:
        request = client.build_request("POST", "/api/1.1/wf/echo", content=chunks())
        response = await client.send(request)
        assert response.status_code == 200
        assert response.json()["response"]["params"]["t"] == "x" * 40


async def test_a_lying_content_length_cannot_sneak_past_the_limit(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"{" + b" " * 200 + b"}"

    async with client_for(tmp_path, ECHO, LIMITED) as client:
        request = client.build_request("POST", "/api/1.1/wf/echo", content=chunks(),
                                       headers={"content-length": "10"})
        envelope(await client.send(request), 413, "PAYLOAD_TOO_LARGE")


# --- routes -----------------------------------------------------------------------------------

HIDDEN = """
kind: api_workflow
name: hidden
expose: false
auth: none
steps:
  - action: return_data
    data: {secret: true}
"""


async def test_unexposed_and_unknown_get_the_same_404(tmp_path: Path) -> None:
    async with client_for(tmp_path / "a", ECHO, HIDDEN) as with_hidden:
        unexposed = await with_hidden.post("/api/1.1/wf/hidden", json={})
        unexposed_get = await with_hidden.get("/api/1.1/wf/hidden")
    async with client_for(tmp_path / "b", ECHO) as without:
        unknown = await without.post("/api/1.1/wf/hidden", json={})
    envelope(unexposed, 404, "NOT_FOUND")
    assert unexposed.content == unknown.content == unexposed_get.content
    assert unexposed.status_code == unknown.status_code == unexposed_get.status_code
    for response in (unexposed, unknown, unexposed_get):
        assert "X-Run-Id" not in response.headers
        assert "Allow" not in response.headers


async def test_paths_outside_the_workflows_are_404_in_the_envelope(
        echo: httpx.AsyncClient) -> None:
    envelope(await echo.get("/nowhere"), 404, "NOT_FOUND")
    envelope(await echo.post("/api/1.1/wf/echo/extra"), 404, "NOT_FOUND")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405_with_allow(echo: httpx.AsyncClient, method: str) -> None:
    response = await echo.request(method, "/api/1.1/wf/echo")
    envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"
    assert "X-Run-Id" not in response.headers


async def test_post_to_a_get_workflow_is_405(echo: httpx.AsyncClient) -> None:
    response = await echo.post("/api/1.1/wf/lookup?q=x")
    envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET"


# --- conditions, replies, failures ------------------------------------------------------------

CONDITIONS = """
kind: api_workflow
name: strict-gate
expose: true
auth: none
only_when: "{{ params.go }}"
params: {go: {type: boolean}}
steps:
  - action: return_data
    data: {ran: true}
---
kind: api_workflow
name: soft-gate
expose: true
auth: none
only_when: "{{ params.go }}"
return_200_if_condition_fails: true
params: {go: {type: boolean}}
steps:
  - action: return_data
    data: {ran: true}
"""


async def test_not_run_is_400_with_bubbles_wording(tmp_path: Path) -> None:
    async with client_for(tmp_path, CONDITIONS) as client:
        response = await client.post("/api/1.1/wf/strict-gate", json={"go": False})
        message = envelope(response, 400, "NOT_RUN")
        assert message == ("The condition for the workflow strict-gate is not met. "
                           "Workflow won't run")
        assert response.headers["X-Run-Id"]
        ran = await client.post("/api/1.1/wf/strict-gate", json={"go": True})
        assert response_of(ran) == {"ran": True}


async def test_not_run_is_200_when_asked(tmp_path: Path) -> None:
    async with client_for(tmp_path, CONDITIONS) as client:
        response = await client.post("/api/1.1/wf/soft-gate", json={"go": "no"})
        message = envelope(response, 200, "NOT_RUN")
        assert message == ("The condition for the workflow soft-gate is not met. "
                           "Workflow won't run")
        assert response.headers["X-Run-Id"]


REPLIES = """
kind: api_workflow
name: nothing
expose: true
auth: none
steps:
  - action: set
    values: {a: 1}
---
kind: api_workflow
name: ended
expose: true
auth: none
steps:
  - action: terminate
  - action: return_data
    data: {unreachable: true}
---
kind: api_workflow
name: text
expose: true
auth: none
params: {who: {type: text}}
steps:
  - action: return_data
    text: "<p>hello {{ params.who }}</p>"
    content_type: text/html; charset=utf-8
    status: 202
    headers: {X-Greeting: "hi {{ params.who }}", Cache-Control: no-store}
---
kind: api_workflow
name: created
expose: true
auth: none
steps:
  - action: return_data
    status: 201
    headers: {Location: /things/1}
    data: {id: 1}
---
kind: api_workflow
name: refuse
expose: true
auth: none
params: {why: {type: text}}
steps:
  - action: fail
    status: 422
    code: NOT_ALLOWED
    message: "refused because {{ params.why }}"
---
kind: api_workflow
name: crash
expose: true
auth: none
steps:
  - action: set
    values: {x: "{{ 1 / 0 }}"}
---
kind: api_workflow
name: undefined-at-run
expose: true
auth: none
params: {o: {type: object}}
steps:
  - action: return_data
    data: {v: "{{ params.o.missing_key }}"}
---
kind: api_workflow
name: reflect
expose: true
auth: none
params: {t: {type: text}, o: {type: object, optional: true}}
steps:
  - id: kept
    action: set
    values: {t: "{{ params.t }}", mixed: "got {{ params.t }}"}
  - action: return_data
    data:
      t: "{{ steps.kept.t }}"
      mixed: "{{ steps.kept.mixed }}"
      o: "{{ params.o }}"
      raw: "{{ request.body }}"
"""


async def test_success_envelope_and_empty_response(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        for name in ("nothing", "ended"):
            response = await client.post(f"/api/1.1/wf/{name}")
            assert response.status_code == 200
            assert response.json() == {"status": "success", "response": {}}
            assert response.headers["X-Run-Id"]


ENCODED = """
kind: api_workflow
name: nested
expose: true
auth: none
params: {who: {type: text}, when: {type: date}}
steps:
  - action: return_data
    data: {who: "{{ params.who }}", when: "{{ params.when }}", list: [1, "é", {deep: null}]}
---
kind: api_workflow
name: unwritable
expose: true
auth: none
steps:
  - action: return_data
    data: {numbers: "{{ range(3) }}"}
"""


async def test_success_body_is_the_envelope_byte_for_byte(tmp_path: Path) -> None:
    # The data is written once (when its size is checked) and framed by the envelope: the
    # bytes must be exactly what encoding the whole envelope gives.
    async with client_for(tmp_path, ENCODED) as client:
        response = await client.post("/api/1.1/wf/nested",
                                     json={"who": "Ada", "when": "2024-05-01T12:00:00+02:00"})
        assert response.status_code == 200
        expected = {"status": "success", "response": {
            "who": "Ada", "when": "2024-05-01T10:00:00.000000Z",
            "list": [1, "é", {"deep": None}]}}
        assert response.content == encode(expected)


async def test_a_reply_json_cannot_hold_is_a_recorded_failure(tmp_path: Path) -> None:
    async with client_for(tmp_path, ENCODED) as client:
        response = await client.post("/api/1.1/wf/unwritable")
        assert response.status_code == 500
        run_id = response.headers["X-Run-Id"]
        assert response.json()["body"]["run_id"] == run_id


async def test_workflows_answer_under_a_mounted_root_path(serve: Serve) -> None:
    # Behind a `root_path`, the workflows' route matches the path below it, as a `Route` does.
    async with serve(ENCODED, stored=False, root_path="/mounted") as gateway:
        response = await gateway.client.post("/mounted/api/1.1/wf/nested",
                                             json={"who": "Ada", "when": "2024-05-01"})
        assert response.status_code == 200, response.text
        assert response.json()["response"]["who"] == "Ada"
        missing = await gateway.client.post("/mounted/api/1.1/wf/absent")
        assert missing.status_code == 404


async def test_return_text_with_content_type_status_and_headers(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        response = await client.post("/api/1.1/wf/text", json={"who": "Ada"})
        assert response.status_code == 202
        assert response.text == "<p>hello Ada</p>"
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["x-greeting"] == "hi Ada"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["X-Run-Id"]


async def test_return_data_with_status_and_headers(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        response = await client.post("/api/1.1/wf/created")
        assert response.status_code == 201
        assert response.json() == {"status": "success", "response": {"id": 1}}
        assert response.headers["location"] == "/things/1"


async def test_fail_step_chooses_status_code_and_message(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        response = await client.post("/api/1.1/wf/refuse", json={"why": "closed"})
        assert envelope(response, 422, "NOT_ALLOWED") == "refused because closed"
        assert response.headers["X-Run-Id"]


@pytest.mark.parametrize("name", ["crash", "undefined-at-run"])
async def test_run_error_is_500_with_run_id_and_no_detail(tmp_path: Path, name: str) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        body = {"o": {"present": 1}} if name == "undefined-at-run" else {}
        response = await client.post(f"/api/1.1/wf/{name}", json=body)
        message = envelope(response, 500, "ERROR")
        run_id = response.headers["X-Run-Id"]
        assert run_id in message
        assert response.json()["body"].get("run_id", run_id) == run_id
        text = response.text
        for leak in ("Traceback", "ZeroDivision", "division", "missing_key", ".yaml", "File ",
                     "gateway/", "undefined"):
            assert leak not in text, leak


async def test_request_data_is_never_rendered(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        payload = {"t": "{{ 7*7 }}", "o": {"k": "{% for x in [1] %}{{ 7*7 }}{% endfor %}"}}
        raw = json.dumps(payload)
        response = await client.post("/api/1.1/wf/reflect", content=raw,
                                     headers={"content-type": "application/json"})
        got = response_of(response)
        assert got["t"] == "{{ 7*7 }}"
        assert got["mixed"] == "got {{ 7*7 }}"
        assert got["o"] == payload["o"]
        assert got["raw"] == raw
        assert "49" not in response.text


async def test_every_response_of_a_run_has_a_distinct_run_id(tmp_path: Path) -> None:
    async with client_for(tmp_path, REPLIES, CONDITIONS) as client:
        responses = [
            await client.post("/api/1.1/wf/nothing"),
            await client.post("/api/1.1/wf/text", json={"who": "x"}),
            await client.post("/api/1.1/wf/text", json={}),
            await client.post("/api/1.1/wf/text", json={"who": {"a": 1}}),
            await client.post("/api/1.1/wf/refuse", json={"why": "x"}),
            await client.post("/api/1.1/wf/crash"),
            await client.post("/api/1.1/wf/strict-gate", json={"go": False}),
        ]
        ids = [r.headers.get("X-Run-Id") for r in responses]
        assert all(ids), [r.status_code for r in responses]
        assert len(set(ids)) == len(ids)


async def test_error_envelope_for_every_error_source(tmp_path: Path) -> None:
    """One shape, whatever produced the error."""
    async with client_for(tmp_path, ECHO, REQUIRED, REPLIES, CONDITIONS, LIMITED) as client:
        cases = [
            (await client.post("/api/1.1/wf/needs", json={}), 400, "MISSING_DATA"),
            (await client.post("/api/1.1/wf/needs", json={"name": "a", "count": "x"}), 400,
             "INVALID_DATA"),
            (await client.post("/api/1.1/wf/needs", content=b"{"), 400, "INVALID_BODY"),
            (await client.post("/api/1.1/wf/echo", content=b"x" * 100), 413,
             "PAYLOAD_TOO_LARGE"),
            (await client.post("/api/1.1/wf/unknown"), 404, "NOT_FOUND"),
            (await client.get("/elsewhere"), 404, "NOT_FOUND"),
            (await client.get("/api/1.1/wf/needs"), 405, "METHOD_NOT_ALLOWED"),
            (await client.post("/api/1.1/wf/strict-gate", json={"go": False}), 400, "NOT_RUN"),
            (await client.post("/api/1.1/wf/soft-gate", json={"go": False}), 200, "NOT_RUN"),
            (await client.post("/api/1.1/wf/refuse", json={"why": "x"}), 422, "NOT_ALLOWED"),
            (await client.post("/api/1.1/wf/crash"), 500, "ERROR"),
        ]
        for response, status, code in cases:
            envelope(response, status, code)


async def test_server_log_has_the_step_location_and_the_cause(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(tmp_path, REPLIES) as client:
        with caplog.at_level("ERROR", logger="gateway.run"):
            response = await client.post("/api/1.1/wf/crash")
    run_id = response.headers["X-Run-Id"]
    (record,) = [r for r in caplog.records if run_id in r.getMessage()]
    message = record.getMessage()
    location = f"{tmp_path / 'config' / 'workflows.yaml'}:"
    assert location in message
    line = int(message.split(location, 1)[1].split(":", 1)[0])
    text = (tmp_path / "config" / "workflows.yaml").read_text().splitlines()
    assert "action: set" in text[line - 1] and "1 / 0" in text[line]
    assert "division by zero" in message
