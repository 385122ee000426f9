"""What webhook verification and idempotency cost: the trivial echo, the same behind a
Stripe signature check, and behind the check plus an idempotency key of its own per request
(a claim and a stored answer in the database each), on one gateway in one run.

    python tests/bench/hooks_bench.py [--duration 10] [--postgres URL] [--no-sqlite]

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
    run.stop(server.process)
    return judged([replace(r, server=f"gateway-{label}") for r in rows])


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
    args = parser.parse_args()
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
