"""A process's outbound services: `Services.running` starts the HTTP client and the mailer
and stops both; a run in a process that never started them says so, rather than blaming
the settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.compiler.loader import load
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.runtime.services import Services

CONFIG = """
kind: settings
smtp: {host: 127.0.0.1, port: 2525, starttls: false, from: gw@example.com}
---
kind: api_workflow
name: mail
auth: none
steps:
  - {action: send_email, to: a@example.com, subject: hi, text: body}
---
kind: api_workflow
name: call
auth: none
steps:
  - {action: http_request, url: "http://127.0.0.1:9/"}
"""


def registry(tmp_path: Path, text: str = CONFIG) -> Registry:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text).strip())
    return load([path])


async def test_running_starts_the_client_and_the_mailer_and_stops_both(tmp_path: Path) -> None:
    settings = registry(tmp_path).settings
    services = Services()
    async with services.running(settings) as started:
        assert started is services and services.started
        assert services.http is not None and not services.http.is_closed
        assert services.mailer is not None and services.mailer.port == 2525
        client = services.http
    assert not services.started and services.mailer is None and client.is_closed


async def test_a_run_without_the_process_s_services_says_they_were_not_started(
        tmp_path: Path) -> None:
    found = registry(tmp_path)
    interpreter = Interpreter(found, None)  # its services never started
    for name, action in (("mail", "send_email"), ("call", "http_request")):
        result = await interpreter.run(found.workflows[name], {})
        assert result.error is not None
        assert f"{action} needs the process's" in result.error.message
        assert "did not start" in result.error.message
        assert "smtp.host" not in result.error.message


async def test_a_started_process_without_smtp_host_names_the_setting(tmp_path: Path) -> None:
    found = registry(tmp_path, CONFIG.replace(
        "smtp: {host: 127.0.0.1, port: 2525, starttls: false, from: gw@example.com}\n", "")
        .replace("subject: hi,", "from: gw@example.com, subject: hi,"))
    interpreter = Interpreter(found, None)
    async with interpreter.services.running(found.settings):
        result = await interpreter.run(found.workflows["mail"], {})
    assert result.error is not None
    assert "smtp.host in the settings" in result.error.message


def test_a_process_loads_the_http_client_only_when_it_calls_out(tmp_path: Path) -> None:
    # In a process of its own: the tests' process has httpx loaded already.
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(CONFIG).strip())
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from gateway.cli import main
        from gateway.compiler.loader import load
        from gateway.runtime.services import Services
        from gateway.server.app import create_app
        create_app(load([Path({str(tmp_path / 'wf.yaml')!r})]))
        assert "httpx" not in sys.modules, "loaded at start"
        async def call_out():
            async with Services().running(load([Path({str(tmp_path / 'wf.yaml')!r})]).settings) \\
                    as services:
                assert services.http is not None
        asyncio.run(call_out())
        assert "httpx" in sys.modules, "not loaded by the first call out"
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
