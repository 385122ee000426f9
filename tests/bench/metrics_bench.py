"""What metrics cost a request, measured in-process: the trivial echo driven through the
ASGI app (no socket, no wrk), metrics on and off in alternating rounds, timed in CPU time of
this process (so that other work on a shared machine weighs less than on wall-clock time).

    python tests/bench/metrics_bench.py [--rounds 15] [--requests 4000]
    python tests/bench/metrics_bench.py --instructions     # needs valgrind

Prints the median CPU microseconds per request with metrics on and off, and their ratio.
With `--instructions`, counts instead the CPU instructions each request costs under
valgrind's callgrind (the difference between 300 and 1,300 requests, divided by 1,000, so
that start-up cancels out): a figure other work on the machine does not move. The figure
that counts is `run.py --scenario metrics` (wrk against a real server); these are steadier
when the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from gateway.compiler.loader import load  # noqa: E402
from gateway.core.encoding import encode  # noqa: E402
from gateway.server.app import create_app  # noqa: E402
from gateway.server.workflow_tests import Request, call  # noqa: E402
from gateway.storage import open_storage  # noqa: E402

ECHO = {"name": "Ada", "count": 3}


async def rounds(count: int, requests: int, folder: Path) -> dict[str, list[float]]:
    apps = {}
    for label, files in (("on", ["echo.yaml"]), ("off", ["echo.yaml", "no_metrics.yaml"])):
        config = folder / label
        config.mkdir()
        for file in files:
            (config / file).write_text((HERE / "workflows" / file).read_text())
        apps[label] = create_app(load([config]),
                                 open_storage(f"sqlite:///{folder / (label + '.db')}"))
    request = Request("POST", "/api/1.1/wf/echo", "", {"content-type": "application/json"},
                      encode(ECHO))
    costs: dict[str, list[float]] = {"on": [], "off": []}
    async with apps["on"].router.lifespan_context(apps["on"]), \
            apps["off"].router.lifespan_context(apps["off"]):
        for label in ("on", "off"):  # warm-up
            for _ in range(requests // 4):
                await call(apps[label], request)
        for index in range(count):
            for label in (("on", "off") if index % 2 == 0 else ("off", "on")):
                started = time.process_time()
                for _ in range(requests):
                    answer = await call(apps[label], request)
                costs[label].append((time.process_time() - started) / requests * 1e6)
                assert answer.status == 200, answer
    return costs


async def drive(label: str, requests: int, folder: Path) -> None:
    """`requests` calls of one app (metrics `on` or `off`): what callgrind counts."""
    config = folder / label
    config.mkdir()
    files = ["echo.yaml"] + (["no_metrics.yaml"] if label == "off" else [])
    for file in files:
        (config / file).write_text((HERE / "workflows" / file).read_text())
    app = create_app(load([config]), open_storage(f"sqlite:///{folder / 'g.db'}"))
    request = Request("POST", "/api/1.1/wf/echo", "", {"content-type": "application/json"},
                      encode(ECHO))
    async with app.router.lifespan_context(app):
        for _ in range(requests):
            answer = await call(app, request)
        assert answer.status == 200, answer


def instructions(label: str, requests: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable,
             __file__, "--drive", label, str(requests)], capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind failed: {done.stderr[-2000:]}")
    return int(found[1])


def count_instructions() -> None:
    per: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(2):
        for label in ("on", "off"):
            few, many = instructions(label, 300), instructions(label, 1300)
            per[label].append((many - few) / 1000)
            print(f"  metrics {label}: {per[label][-1]:,.0f} instructions a request")
    on, off = statistics.mean(per["on"]), statistics.mean(per["off"])
    print(f"instructions per request: metrics on {on:,.0f}, off {off:,.0f}: "
          f"+{on - off:,.0f} ({(on / off - 1) * 100:.1f}% more)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under callgrind instead of timing")
    parser.add_argument("--drive", nargs=2, metavar=("ON_OFF", "REQUESTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as tmp:
            asyncio.run(drive(args.drive[0], int(args.drive[1]), Path(tmp)))
        return 0
    if args.instructions:
        count_instructions()
        return 0
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as tmp:
        costs = asyncio.run(rounds(args.rounds, args.requests, Path(tmp)))
    on, off = statistics.median(costs["on"]), statistics.median(costs["off"])
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests}: "
          f"metrics on {on:.1f} us, off {off:.1f} us: on/off {on / off:.3f} "
          f"(requests per CPU second {off / on:.3f}x, {(1 - off / on) * 100:.1f}% fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
