"""What webhook verification and idempotency cost: the trivial echo, the same behind a
Stripe signature check, and behind the check plus an idempotency key of its own per request
(a claim and a stored answer in the database each), on one gateway in one run.

    python tests/bench/hooks_bench.py [--duration 10] [--postgres URL] [--no-sqlite] [--cpu]

With `--cpu`, also the gateway process's CPU time per request in each scenario (at 64
connections, scenarios taken in turns, twice): on a shared, noisy machine throughput swings
with the neighbours' load, while the CPU a request costs the gateway barely does. On
PostgreSQL the database server's own CPU is not in that figure.

Uses the request-path benchmark's machinery (`run.py`: wrk, the servers, the table).
Target: verification plus the idempotency check cost at most 15% of the trivial workflow's
throughput (ratio ≥ 0.85 against the same gateway's echo at 64 connections).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import psycopg  # noqa: E402
import run  # noqa: E402
import stripe  # noqa: E402

SECRET = "whsec_bench_0123456789abcdef"
FILES = ["echo.yaml", "hooks.yaml"]


def measure(seconds: int, stack: contextlib.ExitStack, tmp: Path, database: str,
            label: str) -> list[run.Row]:
    wrk = run.find_wrk()
    os.environ["BENCH_WEBHOOK_SECRET"] = SECRET  # read by the gateway at start
    server = run.start_gateway(stack, tmp, f"gateway-hooks-{label}", FILES, database)
    run.check_echo(run.wait_ready(server, f"{run.PREFIX}/echo", run.ECHO), server.name)
    body = run.fixed_body(run.ECHO)
    signed = {**body, "BENCH_SIGNATURE": stripe.WebhookSignature.generate_signature_header(
        body["BENCH_BODY"], SECRET, int(time.time()))}
    rows = [replace(r, scenario="trivial") for r in
            run.drive(wrk, server, "trivial", f"{run.PREFIX}/echo", body, seconds)]
    rows += [replace(r, scenario="verify") for r in run.drive(
        wrk, server, "verify", f"{run.PREFIX}/echo-verified", signed, seconds)]
    rows += [replace(r, scenario="verify+idem") for r in run.drive(
        wrk, server, "verify+idem", f"{run.PREFIX}/echo-hooked",
        {**signed, "BENCH_MODE": "delivery", "BENCH_STAMP": str(time.time_ns())}, seconds)]
    if CPU_ROUNDS:
        cpu_per_request(wrk, server, label, {
            "trivial": (f"{run.PREFIX}/echo", body),
            "verify": (f"{run.PREFIX}/echo-verified", signed),
            "verify+idem": (f"{run.PREFIX}/echo-hooked",
                            {**signed, "BENCH_MODE": "delivery",
                             "BENCH_STAMP": str(time.time_ns())})}, seconds)
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
def own_database(url: str) -> Iterator[str]:
    """A fresh database of this benchmark's own (`gateway_bench_hooks`), dropped afterwards:
    the request-path benchmark's `gateway_bench` may be in use by another run."""
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path=parts.path or "/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS gateway_bench_hooks WITH (FORCE)")
        conn.execute("CREATE DATABASE gateway_bench_hooks")
    try:
        yield urlunsplit(parts._replace(path="/gateway_bench_hooks"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS gateway_bench_hooks WITH (FORCE)")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--cpu", action="store_true", help="also CPU time per request")
    args = parser.parse_args()
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
