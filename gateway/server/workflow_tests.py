"""Workflow tests run in-process: each `workflow_test` gets a throwaway SQLite database and
the real application, and each case is one HTTP request through it (no socket), so that what
a test checks is what a caller would get: routing, access levels, body parsing, envelopes."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

from starlette.applications import Starlette
from starlette.types import Message

from gateway.api.auth import key_hash, new_key
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, encode, loads
from gateway.runtime.accounts import fold_email, token_hash
from gateway.runtime.coercion import typed_or_as_is
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import ROUTE_PREFIX, Registry, TestCase, WorkflowTest
from gateway.server.app import create_app
from gateway.storage import Storage, open_storage

TEST_USER = "test.user@example.com"  # who `as: user` is
MAX_SHOWN = 400  # characters of an answer quoted in a failure


@dataclass(frozen=True, slots=True)
class Outcome:
    """One case's result: no failures means it passed."""

    test: str
    case: str
    location: str
    failures: tuple[str, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


async def run_tests(registry: Registry, folder: Path,
                    tests: Iterable[WorkflowTest] | None = None) -> list[Outcome]:
    """Run `tests` (default: every test of the registry), each on a fresh database and a
    fresh folder of files in `folder`, in name order."""
    chosen = sorted(tests if tests is not None else registry.tests.values(),
                    key=lambda t: t.name)
    registry = with_test_secrets(registry)
    outcomes: list[Outcome] = []
    for number, test in enumerate(chosen):
        storage = open_storage(f"sqlite:///{folder / f'test-{number}.db'}")
        # and files of its own: never the config's folder or bucket; and no traces sent
        own = dataclasses.replace(registry.settings, files_s3=None,
                                  files_folder=str(folder / f"test-{number}-files"),
                                  tracing_enabled=False)
        outcomes.extend(await _run_test(dataclasses.replace(registry, settings=own), storage,
                                        test))
    return outcomes


def with_test_secrets(registry: Registry, environ: Mapping[str, str] | None = None) -> Registry:
    """The registry with its declared secrets from the environment, and a stand-in value
    (`workflow-test-NAME`) for each one the environment lacks: a test needs no real secret
    to check, say, that an unsigned webhook is refused."""
    env = os.environ if environ is None else environ
    settings = registry.settings
    secrets = {name: env.get(name) or f"workflow-test-{name}" for name in settings.secret_names}
    return dataclasses.replace(registry, settings=dataclasses.replace(settings, secrets=secrets))


async def _run_test(registry: Registry, storage: Storage,
                    test: WorkflowTest) -> list[Outcome]:
    app = create_app(registry, storage)
    async with app.router.lifespan_context(app):
        callers = _Callers(storage, app.state.interpreter)
        return [await _run_case(app, registry, storage, callers, test, case)
                for case in test.cases]


async def _run_case(app: Starlette, registry: Registry, storage: Storage, callers: _Callers,
                    test: WorkflowTest, case: TestCase) -> Outcome:
    started = time.perf_counter()
    try:
        for type_name, fields in case.records:
            spec = registry.data_types[type_name].fields
            await storage.records.create(type_name, {
                k: typed_or_as_is(v, spec[k].type, spec[k].list) if k in spec else v
                for k, v in fields.items()})
        headers = dict(case.headers)
        token = await callers.token(case.caller)
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        answer = await call(app, _request(registry, case.workflow, case, headers))
        failures = tuple(compare(case, answer))
    except Exception as exc:  # a test reports what broke it, and the others still run
        failures = (f"the case could not run: {type(exc).__name__}: {exc}",)
    return Outcome(test.name, case.name, case.location, failures,
                   time.perf_counter() - started)


class _Callers:
    """Credentials for `as:`, made on first use and kept for the rest of the test."""

    def __init__(self, storage: Storage, interpreter: Interpreter) -> None:
        self.storage = storage
        self.settings = interpreter.registry.settings
        self.tokens: dict[str, str] = {}

    async def token(self, caller: str) -> str | None:
        if caller == "anonymous":
            return None
        if caller not in self.tokens:
            self.tokens[caller] = await (self._admin() if caller == "admin" else
                                         self._user(TEST_USER if caller == "user" else caller))
        return self.tokens[caller]

    async def _admin(self) -> str:
        key = new_key()
        await self.storage.keys.create_key(f"workflow-test-{secrets.token_hex(4)}",
                                           key_hash(key), utc_now())
        return key

    async def _user(self, email: str) -> str:
        folded = fold_email(email)
        found = await self.storage.users.credential(folded)
        if found is None:  # an unusable password: nobody logs in as a test's user
            change = await self.storage.users.create_user(folded, {}, "!", None)
            user_id = change.id
        else:
            user_id = found[0]
        token = secrets.token_urlsafe(32)
        now = utc_now()
        await self.storage.users.create_token(token_hash(token), user_id, now,
                                              now + self.settings.token_lifetime)
        return token


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


def _request(registry: Registry, name: str, case: TestCase,
             headers: dict[str, str]) -> Request:
    workflow = registry.workflows.get(name)
    method = workflow.method if workflow is not None else "POST"
    in_query = {p.name for p in workflow.params if p.in_query} if workflow is not None else set()
    query = {k: v for k, v in case.params.items() if method == "GET" or k in in_query}
    body_params = {k: v for k, v in case.params.items() if k not in query}
    body = b""
    if method != "GET":
        body = encode(body_params)
        headers.setdefault("content-type", "application/json")
    pairs = [(k, _query_value(item)) for k, v in query.items()
             for item in (v if isinstance(v, list) else [v])]
    return Request(method, f"{registry.settings.prefix}{ROUTE_PREFIX}/{name}",
                   urlencode(pairs), headers, body)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else dumps(value)


async def call(app: Starlette, request: Request) -> Answer:
    """One request through the app's ASGI interface, as a server would make it."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in request.headers.items()]
    headers.append((b"content-length", str(len(request.body)).encode()))
    headers.append((b"host", b"gateway-test"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": request.method, "scheme": "http", "path": request.path,
             "raw_path": request.path.encode(), "query_string": request.query.encode(),
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
             "server": ("gateway-test", 80)}
    sent = False
    status = 500
    got_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            got_headers.update((k.decode("latin-1"), v.decode("latin-1"))
                               for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status, got_headers, b"".join(chunks))


def compare(case: TestCase, answer: Answer) -> list[str]:
    """What differs between the case's expectations and the answer, one line each."""
    failures = []
    data = _json(answer)
    if case.status is not None and answer.status != case.status:
        failures.append(f"status: expected {case.status}, got {answer.status}"
                        + _shown_body(answer))
    if case.code is not None:
        got = _error_code(data)
        if got != case.code:
            failures.append(f"code: expected {case.code}, got {got or 'no error code'}"
                            + _shown_body(answer))
    if case.has_response:
        got_response = _response_of(data, answer)
        mismatch = subset_mismatch(case.response, got_response, "response")
        if mismatch is not None:
            failures.append(mismatch)
    for name, value in case.response_headers.items():
        got_header = answer.headers.get(name.lower())
        if got_header != value:
            failures.append(f"header {name}: expected {value!r}, got {got_header!r}")
    return failures


def _json(answer: Answer) -> Any:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        return loads(answer.body)
    except ValueError:
        return None


def _error_code(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("body"), dict):
        code = data["body"].get("status")
        return code if isinstance(code, str) else None
    return None


def _response_of(data: Any, answer: Answer) -> Any:
    if isinstance(data, dict) and data.get("status") == "success" and "response" in data:
        return data["response"]
    if data is not None:
        return data
    return answer.body.decode("utf-8", "replace")


def _shown_body(answer: Answer) -> str:
    text = answer.body.decode("utf-8", "replace")
    return f" ({text[:MAX_SHOWN]}{'...' if len(text) > MAX_SHOWN else ''})"


def subset_mismatch(expected: Any, got: Any, where: str) -> str | None:
    """None when `got` contains `expected` (objects: a subset of keys; lists: the same
    length, item by item; anything else: equal), else where and how they differ."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where}: expected an object, got {_short(got)}"
        for key, value in expected.items():
            if key not in got:
                return f"{where}.{key}: expected {_short(value)}, got nothing"
            found = subset_mismatch(value, got[key], f"{where}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return f"{where}: expected {_short(expected)}, got {_short(got)}"
        for index, (want, have) in enumerate(zip(expected, got, strict=True)):
            found = subset_mismatch(want, have, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    same = expected == got and type(expected) is type(got) or (
        isinstance(expected, int | float) and isinstance(got, int | float)
        and not isinstance(expected, bool) and not isinstance(got, bool) and expected == got)
    return None if same else f"{where}: expected {_short(expected)}, got {_short(got)}"


def _short(value: Any) -> str:
    text = dumps(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.passed]


def junit_xml(outcomes: Sequence[Outcome]) -> bytes:
    """The outcomes as a JUnit XML report (one test suite per workflow test), for CI."""
    root = ElementTree.Element("testsuites", name="gateway test", tests=str(len(outcomes)),
                               failures=str(len(failed(outcomes))))
    suites: dict[str, ElementTree.Element] = {}
    for outcome in outcomes:
        suite = suites.get(outcome.test)
        if suite is None:
            suite = suites[outcome.test] = ElementTree.SubElement(root, "testsuite",
                                                                  name=outcome.test)
        case = ElementTree.SubElement(suite, "testcase", classname=outcome.test,
                                      name=outcome.case, time=f"{outcome.seconds:.6f}",
                                      file=outcome.location.rpartition(":")[0],
                                      line=outcome.location.rpartition(":")[2])
        if outcome.failures:
            failure = ElementTree.SubElement(case, "failure", message=outcome.failures[0])
            failure.text = "\n".join(outcome.failures)
    for suite in suites.values():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))
