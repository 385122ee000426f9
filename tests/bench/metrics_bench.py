"""What metrics cost a request, measured in-process: the trivial echo driven through the
ASGI app (no socket, no wrk), metrics on and off in alternating rounds, timed in CPU time of
this process (so that other work on a shared machine weighs less than on wall-clock time).

    python tests/bench/metrics_bench.py [--rounds 15] [--requests 4000]

Prints the median CPU microseconds per request with metrics on and off, and their ratio.
The figure that counts is `run.py --scenario metrics` (wrk against a real server); this one
is steadier when the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from gateway.app import create_app  # noqa: E402
from gateway.encoding import encode  # noqa: E402
from gateway.loader import load  # noqa: E402
from gateway.storage import open_storage  # noqa: E402
from gateway.testrun import Request, call  # noqa: E402

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as tmp:
        costs = asyncio.run(rounds(args.rounds, args.requests, Path(tmp)))
    on, off = statistics.median(costs["on"]), statistics.median(costs["off"])
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests}: "
          f"metrics on {on:.1f} us, off {off:.1f} us: on/off {on / off:.3f} "
          f"(requests per CPU second {off / on:.3f}x, {(1 - off / on) * 100:.1f}% fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
