"""The instructions a request costs a real gateway server (`gateway serve`, uvloop, the HTTP
layer included) under valgrind's callgrind: `hooks_bench.py --served`.

The server runs under callgrind (every thread, and any child, in user space; not the
kernel's work), a client outside it sends `count` requests of a scenario over 64
keep-alive connections, then the server is stopped and its instructions totalled. Two
counts (400 and 1,400) give the cost of 1,000 requests with start-up and shutdown
cancelled out."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import run

CONNECTIONS = 64
READY_SECONDS = 600.0  # start-up under valgrind is slow
RESENT: list[str] = []  # requests sent again on a new connection (reported)


async def send(base: str, requests: Iterator[Any], count: int) -> None:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:

        async def one_by_one(share: int) -> None:
            for _ in range(share):
                request = next(requests)
                try:
                    answer = await client.post(request.path, content=request.body,
                                               headers=request.headers)
                except httpx.TransportError:  # a keep-alive connection the server closed
                    RESENT.append(request.path)
                    answer = await client.post(request.path, content=request.body,
                                               headers=request.headers)
                if answer.status_code != 200:
                    raise run.BenchError(f"{request.path} answered {answer.status_code}: "
                                         f"{answer.text[:500]}")

        shares = [count // CONNECTIONS + (i < count % CONNECTIONS) for i in range(CONNECTIONS)]
        await asyncio.gather(*(one_by_one(share) for share in shares if share))


def instructions(requests: Iterator[Any], count: int, database: str, folder: Path,
                 files: list[str], env: dict[str, str]) -> int:
    """The instructions a server process spent from start to stop, `count` requests
    served in between."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--served needs valgrind (apt-get install valgrind)")
    out = folder / f"callgrind-{time.time_ns()}"
    out.mkdir()
    config = out / "config"
    config.mkdir()
    for file in files:
        text = (run.WORKFLOWS / file).read_text()
        # Under valgrind the server is some fifty times slower: the time limits for a
        # request's first byte, headers and body would close connections still waiting for
        # their turn.
        text = text.replace("kind: settings\n", "kind: settings\n"
                            "server: {header_timeout: 600s, body_timeout: 600s, "
                            "first_byte_timeout: 600s}\n")
        (config / file).write_text(text)
    port = run.free_port()
    argv = [valgrind, "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out}/cg.%p", sys.executable, "-m", "gateway", "serve",
            "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--database", database]
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(run.ROOT), os.environ.get("PYTHONPATH", "")]))}
    with (out / "server.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=run.ROOT,
                                   env=environ, start_new_session=True)
    try:
        server = run.Server("served", f"http://127.0.0.1:{port}", process, out / "server.log")
        deadline = time.monotonic() + READY_SECONDS
        while True:  # one echo, the same in every run: it cancels out
            try:
                run.post(server.base + f"{run.PREFIX}/echo", run.ECHO, timeout=60.0)
                break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_tail = run.tail(out / "server.log")
                    raise run.BenchError(f"the server did not start:\n{log_tail}") from exc
                time.sleep(0.5)
        asyncio.run(send(server.base, requests, count))
    finally:
        with_timeout_stop(process)
    total = 0
    for dump in out.glob("cg.*"):
        found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
        if found is None:
            raise run.BenchError(f"no total in {dump}")
        total += int(found[1])
    return total


def with_timeout_stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
