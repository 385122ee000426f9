"""Traces across processes: `gateway serve --no-scheduler` takes a webhook that schedules a
job, `gateway worker` runs the job, which calls an upstream; each process sends its spans to
a real OTLP/HTTP receiver on loopback, named by its own `OTEL_*` environment, and the
worker's trace links to the server's. On SQLite and PostgreSQL. Also: a process told to
trace without the `otel` extra refuses to start, saying what to install."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ROOT, ReceivedSpan, Upstream, children, one, otlp_receiver, upstream
from test_traces import CALLER, SECRET

CONFIG = """
kind: settings
secrets: [API_SECRET]
tracing: {{enabled: true}}
scheduler: {{poll: 100ms}}
---
kind: api_workflow
name: hook
auth: none
expose: true
params:
  ref: {{type: text, trace: true}}
steps:
  - action: schedule_workflow
    workflow: call
    at: "{{{{ now }}}}"
    params: {{ref: "{{{{ params.ref }}}}"}}
---
kind: api_workflow
name: call
auth: admin
params:
  ref: {{type: text}}
steps:
  - action: http_request
    method: POST
    url: "{upstream}/orders?key={{{{ secrets.API_SECRET }}}}"
    json: {{ref: "{{{{ params.ref }}}}"}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """The processes a test started, stopped with SIGTERM (killed if need be) at its end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=ROOT,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        self.started.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}"
                         for _, log in self.started)

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    found = Processes(tmp_path)
    try:
        yield found
    finally:
        found.stop()


def ready(url: str, processes: Processes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if client.get(url + "/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling a condition, with a deadline that says what it waits for
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{processes.logs()}")


def chained(spans: list[ReceivedSpan]) -> bool:
    return {"POST /api/1.1/wf/hook", "run hook", "run call", "POST"} <= {s.name for s in spans}


def test_a_chain_from_serve_to_a_worker_is_linked_across_the_processes(
        tmp_path: Path, storage_url: str, processes: Processes) -> None:
    with otlp_receiver() as receiver, upstream() as up:
        folder = tmp_path / "workflows.d"
        folder.mkdir()
        (folder / "wf.yaml").write_text(textwrap.dedent(CONFIG.format(upstream=up.url)))
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
               "API_SECRET": SECRET, "GATEWAY_DATABASE_URL": storage_url}
        port = free_port()
        processes.start(["serve", "--config", str(folder), "--port", str(port),
                         "--no-scheduler"], "serve",
                        {**env, "OTEL_RESOURCE_ATTRIBUTES": "gateway.process=serve"})
        processes.start(["worker", "--config", str(folder)], "worker",
                        {**env, "OTEL_SERVICE_NAME": "gateway-worker",
                         "OTEL_RESOURCE_ATTRIBUTES": "gateway.process=worker"})
        url = f"http://127.0.0.1:{port}"
        ready(url, processes)
        answer = httpx.post(url + "/api/1.1/wf/hook", json={"ref": "P-1"},
                            headers={"traceparent": CALLER}, timeout=10)
        assert answer.status_code == 200, answer.text
        try:
            spans = receiver.wait_for(chained, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{processes.logs()}") from None
        check(spans, up)


def check(spans: list[ReceivedSpan], up: Upstream) -> None:
    server = one(spans, "POST /api/1.1/wf/hook")
    run = one(children(spans, server), "run hook")
    assert server.resource["gateway.process"] == "serve"
    assert server.resource["service.name"] == "workflow-gateway"
    job_run = one(spans, "run call")
    assert job_run.resource["gateway.process"] == "worker"
    assert job_run.resource["service.name"] == "gateway-worker"
    assert job_run.parent_span_id == "" and job_run.links == ((run.trace_id, run.span_id),)
    client = one(children(spans, one(children(spans, job_run), "step 1 http_request")), "POST")
    assert up.headers[-1]["traceparent"].split("-")[1:3] == [client.trace_id, client.span_id]
    assert all(SECRET not in str(s.attributes) for s in spans)


def test_tracing_without_the_extra_refuses_to_start(tmp_path: Path) -> None:
    folder = tmp_path / "workflows.d"
    folder.mkdir()
    (folder / "wf.yaml").write_text("kind: settings\ntracing: {enabled: true}\n")
    # The SDK made unimportable, as where the extra is not installed.
    program = ("import sys; sys.modules['opentelemetry'] = None; "
               "from gateway.cli import main; main()")
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-c", program, *command, "--config", str(folder), "--database",
             f"sqlite:///{tmp_path / 'gateway.db'}"], cwd=ROOT, capture_output=True,
            text=True, timeout=60, check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "pip install 'workflow-gateway[otel]'" in done.stderr
        assert "Traceback" not in done.stderr
