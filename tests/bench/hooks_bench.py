"""What webhook verification and idempotency cost: the trivial echo, the same behind a
Stripe signature check, and behind the check plus an idempotency key of its own per request
(a claim and a stored answer in the database each), on one gateway in one run. All three
get the same requests (signed, a delivery id each), so that only the gateway's work differs.

    python tests/bench/hooks_bench.py [--duration 10] [--postgres URL] [--no-sqlite] [--cpu]
    python tests/bench/hooks_bench.py --instructions [--postgres URL] [--no-sqlite]
    python tests/bench/hooks_bench.py --in-process [--postgres URL] [--no-sqlite]

With `--cpu`, also the gateway process's CPU time per request in each scenario (at 64
connections, scenarios taken in turns, twice): on a shared, noisy machine throughput swings
with the neighbours' load, while the CPU a request costs the gateway barely does. On
PostgreSQL the database server's own CPU is not in that figure.

With `--instructions`, no server and no wrk: each scenario is driven in-process through the
app's ASGI interface (64 requests at a time, as 64 connections would send them) under
valgrind's callgrind, and the CPU instructions a request costs are counted (the difference
between 400 and 1,400 requests, over 1,000, so that start-up cancels out; every thread of
the process in user space, the SQLite writer's included; not the kernel's work, such as
writing SQLite's WAL, nor the PostgreSQL server's). Other work on the machine does not move
that figure. `--in-process` drives the same in CPU time instead
(median microseconds of this process per request over alternated rounds).

Uses the request-path benchmark's machinery (`run.py`: wrk, the servers, the table).
Target: verification plus the idempotency check cost at most 15% of the trivial workflow's
throughput (ratio ≥ 0.85 against the same gateway's echo at 64 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import psycopg  # noqa: E402
import run  # noqa: E402
import served  # noqa: E402
import stripe  # noqa: E402

from gateway.compiler.loader import load  # noqa: E402
from gateway.server.app import create_app  # noqa: E402
from gateway.server.workflow_tests import Request, call, with_test_secrets  # noqa: E402
from gateway.storage import open_storage  # noqa: E402

SECRET = "whsec_bench_0123456789abcdef"
FILES = ["echo.yaml", "hooks.yaml"]
PATHS = {"trivial": "echo", "verify": "echo-verified", "verify+idem": "echo-hooked"}
CONCURRENT = 64  # in-process requests in flight at once


def measure(seconds: int, stack: contextlib.ExitStack, tmp: Path, database: str,
            label: str) -> list[run.Row]:
    wrk = run.find_wrk()
    os.environ["BENCH_WEBHOOK_SECRET"] = SECRET  # read by the gateway at start
    server = run.start_gateway(stack, tmp, f"gateway-hooks-{label}", FILES, database)
    run.check_echo(run.wait_ready(server, f"{run.PREFIX}/echo", run.ECHO), server.name)
    # Every scenario gets the same requests (signed, each with a delivery id of its own), so
    # that wrk's own work per request, on the same cores, is the same in all three and only
    # what the gateway does differs: the echo ignores the signature and the delivery id.
    body = run.fixed_body(run.ECHO)
    sent = {**body, "BENCH_SIGNATURE": stripe.WebhookSignature.generate_signature_header(
        body["BENCH_BODY"], SECRET, int(time.time())), "BENCH_MODE": "delivery"}
    paths = {name: f"{run.PREFIX}/{path}" for name, path in PATHS.items()}
    rows = []
    for scenario, path in paths.items():
        env = {**sent, "BENCH_STAMP": f"{time.time_ns()}"}
        rows += [replace(r, scenario=scenario)
                 for r in run.drive(wrk, server, scenario, path, env, seconds)]
    if CPU_ROUNDS:
        cpu_per_request(wrk, server, label, {
            name: (path, {**sent, "BENCH_STAMP": f"{time.time_ns()}-{name}"})
            for name, path in paths.items()}, seconds)
    run.stop(server.process)
    return judged([replace(r, server=f"gateway-{label}") for r in rows])


CPU_ROUNDS: list[int] = []  # set by --cpu


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(wrk: str, server: run.Server, label: str,
                    scenarios: dict[str, tuple[str, dict[str, str]]], seconds: int) -> None:
    for round_ in range(2):
        used: dict[str, float] = {}
        for scenario, (path, env) in scenarios.items():
            before = cpu_seconds(server.process.pid)
            got = run.run_wrk(wrk, server.base + path, 2, 64, seconds, env)
            used[scenario] = (cpu_seconds(server.process.pid) - before) / got["requests"]
        trivial = used["trivial"]
        print(f"  CPU per request, {label}, round {round_ + 1}: " + ", ".join(
            f"{name} {value * 1e6:.0f} µs ({trivial / value:.2f}× trivial's throughput)"
            for name, value in used.items()))


@contextlib.contextmanager
def own_database(url: str, name: str = "gateway_bench_hooks") -> Iterator[str]:
    """A fresh database of this benchmark's own (`gateway_bench_hooks`; the in-process modes
    use `gateway_bench_hooks_inproc`, so that both can run at once), dropped afterwards:
    the request-path benchmark's `gateway_bench` may be in use by another run."""
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path=parts.path or "/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def judged(rows: list[run.Row]) -> list[run.Row]:
    trivial = {r.connections: r.rps for r in rows if r.scenario == "trivial"}
    out = []
    for row in rows:
        if row.scenario != "trivial":
            ratio = row.rps / trivial[row.connections]
            row = replace(row, ratio=ratio)
            if row.connections == 64 and row.scenario == "verify+idem":
                row = replace(row, target="≥ 0.85× trivial",
                              verdict="PASS" if ratio >= 0.85 else "MISS")
        out.append(row)
    return out


# --- in-process: CPU time and instructions ---------------------------------------------

def in_process_app(folder: Path, database: str) -> Any:
    os.environ["BENCH_WEBHOOK_SECRET"] = SECRET
    config = folder / "config"
    config.mkdir(exist_ok=True)
    for file in FILES:
        (config / file).write_text((HERE / "workflows" / file).read_text())
    return create_app(with_test_secrets(load([config])), open_storage(database), scheduler=False)


def requests_of(scenario: str) -> Iterator[Any]:
    """The requests of a scenario, endlessly: signed, each a new delivery (the echo and
    `verify` ignore what they do not check)."""
    body = json.dumps(run.ECHO)
    headers = {"content-type": "application/json",
               "stripe-signature": stripe.WebhookSignature.generate_signature_header(
                   body, SECRET, int(time.time()))}
    path = f"{run.PREFIX}/{PATHS[scenario]}"
    stamp = time.time_ns()
    sent = 0
    while True:  # the same requests in every scenario, as `measure` sends them
        sent += 1
        headers = {**headers, "x-delivery": f"{stamp}-{sent}"}
        yield Request("POST", path, "", headers, body.encode())


async def send(app: Any, scenario: str, count: int) -> None:
    """`count` requests, `CONCURRENT` at a time, each answered 200."""
    made = requests_of(scenario)

    async def one_by_one(share: int) -> None:
        for _ in range(share):
            answer = await call(app, next(made))
            assert answer.status == 200, answer

    shares = [count // CONCURRENT + (i < count % CONCURRENT) for i in range(CONCURRENT)]
    await asyncio.gather(*(one_by_one(share) for share in shares if share))


async def drive(scenario: str, count: int, database: str, folder: Path) -> None:
    """What callgrind counts: `count` requests of one scenario on one database."""
    app = in_process_app(folder, database)
    async with app.router.lifespan_context(app):
        await send(app, scenario, count)


async def cpu_rounds(database: str, folder: Path, rounds: int,
                     count: int) -> dict[str, list[float]]:
    app = in_process_app(folder, database)
    costs: dict[str, list[float]] = {name: [] for name in PATHS}
    async with app.router.lifespan_context(app):
        for scenario in PATHS:  # warm-up
            await send(app, scenario, count // 4)
        for index in range(rounds):
            order = list(PATHS) if index % 2 == 0 else list(reversed(PATHS))
            for scenario in order:
                started = time.process_time()
                await send(app, scenario, count)
                costs[scenario].append((time.process_time() - started) / count * 1e6)
    return costs


def instructions(scenario: str, count: int, database: str) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable,
             __file__, "--drive", scenario, str(count), database],
            capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind failed: {done.stderr[-2000:]}")
    return int(found[1])


def report(label: str, per: dict[str, float], unit: str) -> None:
    trivial = per.get("trivial")
    print(f"{label}: " + ", ".join(
        f"{name} {value:,.0f} {unit}" + (f" ({trivial / value:.2f}× trivial's throughput)"
                                          if trivial else "")
        for name, value in per.items()), flush=True)


def in_process(databases: list[tuple[str, str]], count_instructions: bool,
               repeat: int = 2, scenarios: list[str] | None = None) -> None:
    for label, database in databases:
        if count_instructions:
            per: dict[str, list[float]] = {name: [] for name in scenarios or PATHS}
            for _ in range(repeat):
                for scenario in per:
                    few = instructions(scenario, 400, database)
                    many = instructions(scenario, 1400, database)
                    per[scenario].append((many - few) / 1000)
            print(f"  {label}: " + ", ".join(f"{name} {values}" for name, values in per.items()))
            report(f"instructions per request, {label}",
                   {name: statistics.mean(values) for name, values in per.items()},
                   "instructions")
        else:
            with tempfile.TemporaryDirectory(prefix="gateway-hooks-") as tmp:
                costs = asyncio.run(cpu_rounds(database, Path(tmp), 10, 4000))
            report(f"CPU per request, {label}, median of 10 rounds",
                   {name: statistics.median(values) for name, values in costs.items()}, "µs")


def served_per_request(label: str, database: str, tmp: Path, repeat: int,
                       scenarios: list[str] | None) -> None:
    """`--served`: instructions a request through a real server (`served.py`)."""
    per: dict[str, list[float]] = {name: [] for name in scenarios or PATHS}
    for index in range(repeat):
        for scenario in per:
            counts = []
            for count in (400, 1400):
                folder = tmp / f"{label}-{scenario}-{index}-{count}"
                folder.mkdir()
                url = database.replace("TMP", str(folder))
                counts.append(served.instructions(requests_of(scenario), count, url, tmp,
                                                  FILES, {"BENCH_WEBHOOK_SECRET": SECRET}))
            per[scenario].append((counts[1] - counts[0]) / 1000)
    print(f"  {label}, served: " + ", ".join(f"{name} {values}" for name, values in per.items())
          + (f" ({len(served.RESENT)} request(s) sent again)" if served.RESENT else ""))
    report(f"instructions per request through a server, {label}",
           {name: statistics.mean(values) for name, values in per.items()}, "instructions")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--cpu", action="store_true", help="also CPU time per request")
    parser.add_argument("--instructions", action="store_true",
                        help="in-process, CPU instructions per request under callgrind")
    parser.add_argument("--in-process", action="store_true",
                        help="in-process, CPU time per request")
    parser.add_argument("--served", action="store_true",
                        help="a real server, CPU instructions per request under callgrind")
    parser.add_argument("--repeat", type=int, default=2,
                        help="with --instructions: measurements of each scenario")
    parser.add_argument("--scenario", action="append", choices=list(PATHS),
                        help="with --instructions: only this scenario (repeatable)")
    parser.add_argument("--drive", nargs=3, metavar=("SCENARIO", "REQUESTS", "DATABASE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        with tempfile.TemporaryDirectory(prefix="gateway-hooks-") as tmp:
            database = args.drive[2].replace("TMP", tmp)
            asyncio.run(drive(args.drive[0], int(args.drive[1]), database, Path(tmp)))
        return 0
    if args.served:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-hooks-")))
            databases = [] if args.no_sqlite else [("SQLite", "sqlite:///TMP/hooks.db")]
            if args.postgres:
                databases.append(("PostgreSQL", stack.enter_context(
                    own_database(args.postgres, "gateway_bench_hooks_inproc"))))
            for label, database in databases:
                served_per_request(label, database, tmp, args.repeat, args.scenario)
        return 0
    if args.instructions or args.in_process:
        with contextlib.ExitStack() as stack:
            databases = [] if args.no_sqlite else [("SQLite", "sqlite:///TMP/hooks.db")]
            if args.postgres:
                databases.append(("PostgreSQL", stack.enter_context(
                    own_database(args.postgres, "gateway_bench_hooks_inproc"))))
            if not args.instructions:  # one folder for the whole in-process run
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-hooks-"))
                databases = [(label, url.replace("TMP", tmp)) for label, url in databases]
            in_process(databases, args.instructions, args.repeat, args.scenario)
        return 0
    if args.cpu:
        CPU_ROUNDS.append(2)
    rows: list[run.Row] = []
    with tempfile.TemporaryDirectory(prefix="gateway-hooks-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        try:
            if not args.no_sqlite:
                rows += measure(args.duration, stack, Path(tmp), f"sqlite:///{tmp}/hooks.db",
                                "sqlite")
            if args.postgres:
                with own_database(args.postgres) as url:
                    rows += measure(args.duration, stack, Path(tmp), url, "postgresql")
        except run.BenchError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    run.print_tables(rows)
    print(json.dumps({"note": "ratios against the same gateway's trivial echo"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
