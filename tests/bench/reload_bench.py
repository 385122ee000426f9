"""Reloads under load: `wrk` at 64 connections against one gateway worker while its config is
reloaded ten times (the echo workflow rewritten, then SIGHUP), counting failed requests.

    python tests/bench/reload_bench.py [--reloads 10] [--interval 1.0] [--connections 64]

Every reload is checked to have been applied (the server logs "config reloaded" once per
reload). Exits 1 when a request failed (an answer >= 400 or a socket error) or a reload was
not applied.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from run import (
    ECHO,
    PREFIX,
    WORKFLOWS,
    BenchError,
    check_echo,
    find_wrk,
    fixed_body,
    free_port,
    run_wrk,
    spawn,
    stop,
    wait_ready,
)


def rewrite(config: Path, version: int) -> None:
    """The echo workflow with a different label: a new config version, the same answers."""
    text = (WORKFLOWS / "echo.yaml").read_text()
    (config / "echo.yaml").write_text(text.replace("name: echo", f"name: echo\nlabel: v{version}"))


def reload_loop(process_pid: int, config: Path, reloads: int, interval: float,
                started: threading.Event) -> None:
    started.wait()
    for version in range(1, reloads + 1):
        time.sleep(interval)  # spread the reloads over the load; not a synchronisation
        rewrite(config, version)
        os.kill(process_pid, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reloads")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    wrk = find_wrk()
    seconds = int(args.reloads * args.interval + 4)
    with tempfile.TemporaryDirectory(prefix="gateway-reload-") as tmp, \
            contextlib.ExitStack() as stack:
        root = Path(tmp)
        config = root / "config"
        config.mkdir()
        shutil.copy(WORKFLOWS / "echo.yaml", config / "echo.yaml")
        port = free_port()
        log = root / "gateway.log"
        server = spawn(stack, "gateway", [
            sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--database",
            f"sqlite:///{root / 'gateway.db'}"], port, log)
        try:
            check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
            started = threading.Event()
            reloader = threading.Thread(target=reload_loop, args=(
                server.process.pid, config, args.reloads, args.interval, started))
            reloader.start()
            started.set()
            got = run_wrk(wrk, server.base + f"{PREFIX}/echo", 2, args.connections, seconds,
                          fixed_body(ECHO))
            reloader.join()
            applied = log.read_text().count("config reloaded")
            stop(server.process)
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    rps = got["requests"] / (got["duration_us"] / 1e6)
    failed = int(sum(v for k, v in got.items() if k.endswith(("errors", "timeouts"))))
    print(f"{int(got['requests'])} requests in {got['duration_us'] / 1e6:.1f} s "
          f"({rps:.0f} req/s) at {args.connections} connections, {applied} of "
          f"{args.reloads} reloads applied, {failed} failed requests; "
          f"p50 {got['p50_us'] / 1000:.2f} ms, p99 {got['p99_us'] / 1000:.2f} ms")
    return 0 if failed == 0 and applied == args.reloads else 1


if __name__ == "__main__":
    sys.exit(main())
