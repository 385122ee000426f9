"""What the access levels cost: the trivial echo with no credential, with an admin key and
with a user's token, on one gateway in one run; and log-in (its argon2id hash included).

    python tests/bench/auth_bench.py [--duration 10]

Uses the request-path benchmark's machinery (`run.py`: wrk, the servers, the table). The key
and the user are made in the database before the server starts. Targets: a key or token
check costs at most 5% of the trivial throughput (ratio ≥ 0.95 against the same gateway's
anonymous echo at 64 connections); log-in p50 under 100 ms at one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402

from gateway.api.auth import key_hash, new_key  # noqa: E402
from gateway.compiler.loader import load  # noqa: E402
from gateway.core.clock import utc_now  # noqa: E402
from gateway.core.settings import Settings  # noqa: E402
from gateway.runtime.accounts import Accounts  # noqa: E402
from gateway.storage import open_storage  # noqa: E402

FILES = ["echo.yaml", "auth.yaml"]
USER = {"email": "bench@example.com", "password": "correct horse battery"}


async def credentials(database: str, config: Path) -> tuple[str, str]:
    """An admin key and a user's token, made through the storage API."""
    storage = open_storage(database)
    await storage.open(run.storage_types(load([config])))
    try:
        key = new_key()
        await storage.keys.create_key("bench", key_hash(key), utc_now())
        accounts = Accounts(storage.users, Settings())
        _, session = await accounts.signup(USER["email"], USER["password"], {}, False, None)
    finally:
        await storage.close()
    return key, str(session["token"])


def measure(seconds: int, stack: contextlib.ExitStack, tmp: Path) -> list[run.Row]:
    wrk = run.find_wrk()
    database = f"sqlite:///{tmp / 'auth.db'}"
    config = tmp / "config-gateway-auth"
    server = run.start_gateway(stack, tmp, "gateway-auth", FILES, database)
    run.stop(server.process)  # made the config folder and the schema; now the credentials
    key, token = asyncio.run(credentials(database, config))
    port = run.free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--database", database]
    server = run.spawn(stack, "gateway-auth", argv, port, tmp / "gateway-auth-2.log")
    run.check_echo(run.wait_ready(server, f"{run.PREFIX}/echo", run.ECHO), server.name)
    body = run.fixed_body(run.ECHO)
    rows = [replace(r, scenario="anonymous") for r in
            run.drive(wrk, server, "trivial", f"{run.PREFIX}/echo", body, seconds)]
    rows += [replace(r, scenario="admin key") for r in run.drive(
        wrk, server, "trivial", f"{run.PREFIX}/echo-admin", {**body, "BENCH_AUTH": key},
        seconds)]
    rows += [replace(r, scenario="user token") for r in run.drive(
        wrk, server, "trivial", f"{run.PREFIX}/echo-user", {**body, "BENCH_AUTH": token},
        seconds)]
    login = run.run_wrk(wrk, server.base + f"{run.PREFIX}/login", 1, 1, seconds,
                        run.fixed_body(USER))
    rps = login["requests"] / (login["duration_us"] / 1e6)
    rows.append(run.Row("log-in", server.name, 1, rps, login["p50_us"] / 1000,
                        login["p99_us"] / 1000, run.peak_rss_mib(server.process.pid)))
    run.stop(server.process)
    return judged(rows)


def judged(rows: list[run.Row]) -> list[run.Row]:
    anonymous = {r.connections: r.rps for r in rows if r.scenario == "anonymous"}
    out = []
    for row in rows:
        if row.scenario in ("admin key", "user token"):
            ratio = row.rps / anonymous[row.connections]
            row = replace(row, ratio=ratio)
            if row.connections == 64:
                row = replace(row, target="≥ 0.95× anonymous",
                              verdict="PASS" if ratio >= 0.95 else "MISS")
        if row.scenario == "log-in":
            row = replace(row, target="p50 < 100 ms",
                          verdict="PASS" if row.p50_ms < 100 else "MISS")
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-auth-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        try:
            rows = measure(args.duration, stack, Path(tmp))
        except run.BenchError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    run.print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
