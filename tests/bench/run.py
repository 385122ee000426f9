"""The request-path benchmark: the gateway against a bare Starlette route, driven by wrk.

    python tests/bench/run.py [--duration 10]
                              [--scenario trivial|typical|create|search|all]
                              [--postgres URL] [--scenario metrics --rounds 3]
                              [--scenario tracing|tracing-down --rounds 3
                               --sample-ratio 1.0]

Each server runs as its own process with one uvicorn worker (uvloop, httptools); wrk runs
as another, at 64 connections (-t2 -c64) and at 1 (-t1 -c1), after a short warm-up. The
figures are printed as a table and again as markdown. Targets are reported (PASS/MISS), not
enforced: the exit status is non-zero only when a server did not start or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib import error as urlerror
from urllib import parse as urlparse
from urllib import request as urlrequest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # the gateway is imported from the checkout, installed or not

import psycopg  # noqa: E402

from gateway.compiler.loader import load  # noqa: E402
from gateway.server.app import storage_types  # noqa: E402
from gateway.storage import open_storage  # noqa: E402
from gateway.storage.contract import Constraint  # noqa: E402

WORKFLOWS = HERE / "workflows"
LUA = HERE / "post.lua"
PREFIX = "/api/1.1/wf"
ECHO = {"name": "Ada", "count": 3}
CONTACT = {"name": "Ada Lovelace", "email": "Ada@Example.COM", "company": " Analytical Engines ",
           "seats": 3}
CONTACT_REPLY = {"greeting": "Hello Ada Lovelace", "email": "ada@example.com",
                 "company": "Analytical Engines", "plan": "FREE",
                 "label": "Ada Lovelace <ada@example.com>", "seats": 3, "source": "web"}
CONCURRENCY = ((2, 64), (1, 1))  # (wrk threads, connections)
WARMUP_SECONDS = 2
READY_SECONDS = 30.0
SEEDED = 100_000
SEED_BATCH = 500
SEARCH_SAMPLES = 1_000
MIB = 1024 * 1024
DOWN_STOP_SECONDS = 60.0  # tracing-down: how long a stop may take before SIGKILL


class BenchError(Exception):
    """A server did not start, or a request did not succeed: the run is worthless."""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    server: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mib: float = 0.0
    ratio: float | None = None
    target: str = ""
    verdict: str = ""


# --- processes ---------------------------------------------------------------------------

def find_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        print(f"wrk: {found}")
        return found
    print("wrk: not on PATH; installing the Debian package (apt-get install -y wrk)")
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        print("wrk: install failed; running apt-get update, then installing again")
        subprocess.run(["apt-get", "update"], capture_output=True, check=False)
        subprocess.run(install, capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed and `apt-get install -y wrk` did not install it")
    print(f"wrk: installed at {found}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(stack: contextlib.ExitStack, name: str, argv: Sequence[str], port: int,
          log: Path, extra_env: Mapping[str, str] | None = None) -> Server:
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    with log.open("wb") as out:
        # A session of its own, so that the whole group can be stopped, and Ctrl-C reaches
        # only this driver (which then stops the servers in order).
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=env, start_new_session=True)
    stack.callback(stop, process)
    return Server(name, f"http://127.0.0.1:{port}", process, log)


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def post(url: str, body: Mapping[str, Any], timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    req = urlrequest.Request(url, data=data, method="POST",
                             headers={"Content-Type": "application/json"})
    try:
        with urlrequest.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urlerror.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_ready(server: Server, path: str, body: Mapping[str, Any]) -> Any:
    """Polls `POST path` until the server answers 200; returns the answer's JSON."""
    url = server.base + path
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.process.returncode} before "
                             f"answering POST {url}:\n{tail(server.log)}")
        try:
            status, answer = post(url, body, timeout=2.0)
        except (urlerror.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
            continue
        if status != 200:
            raise BenchError(f"{server.name}: POST {url} answered {status}: {answer}\n"
                             f"{tail(server.log)}")
        return answer
    raise BenchError(f"{server.name} did not answer POST {url} within {READY_SECONDS:.0f} s:"
                     f"\n{tail(server.log)}")


def tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(["--- server log (last lines) ---", *text[-lines:]])


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a process plus that of all its descendants."""
    total = 0
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total / MIB


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


# --- wrk ---------------------------------------------------------------------------------

def run_wrk(wrk: str, url: str, threads: int, connections: int, seconds: int,
            env: Mapping[str, str]) -> dict[str, float]:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(LUA), url]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env},
                          timeout=seconds + 60)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    result: dict[str, float] = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    failed = {k: v for k, v in result.items() if k.endswith(("errors", "timeouts")) and v}
    if failed:
        raise BenchError(f"requests failed against {url} at -c{connections}: {failed} "
                         f"(status_errors counts answers >= 400)\n{done.stdout}")
    if not result["requests"]:
        # Not a failure: every request was still in flight when the time was up.
        print(f"  warning: no request to {url} completed within {seconds} s at "
              f"-c{connections}; its latencies are unknown (nan)")
        result.update(p50_us=float("nan"), p99_us=float("nan"))
    return result


def drive(wrk: str, server: Server, scenario: str, path: str, env: Mapping[str, str],
          seconds: int) -> list[Row]:
    url = server.base + path
    rows = []
    for threads, connections in CONCURRENCY:
        run_wrk(wrk, url, threads, connections, WARMUP_SECONDS, env)
        got = run_wrk(wrk, url, threads, connections, seconds, env)
        rps = got["requests"] / (got["duration_us"] / 1e6)
        rows.append(Row(scenario, server.name, connections, rps, got["p50_us"] / 1000,
                        got["p99_us"] / 1000))
        print(f"  {scenario:<8} {server.name:<18} c={connections:<3} {rps:>9.0f} req/s  "
              f"p50 {got['p50_us'] / 1000:.2f} ms  p99 {got['p99_us'] / 1000:.2f} ms")
    rss = peak_rss_mib(server.process.pid)
    return [replace(row, rss_mib=rss) for row in rows]


def fixed_body(body: Mapping[str, Any]) -> dict[str, str]:
    return {"BENCH_MODE": "fixed", "BENCH_BODY": json.dumps(body)}


# --- servers and scenarios ---------------------------------------------------------------

def start_bare(stack: contextlib.ExitStack, tmp: Path) -> Server:
    port = free_port()
    argv = [sys.executable, str(HERE / "bare_app.py"), "--port", str(port)]
    server = spawn(stack, "bare", argv, port, tmp / "bare.log")
    check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
    return server


def start_gateway(stack: contextlib.ExitStack, tmp: Path, name: str, files: Sequence[str],
                  database: str, env: Mapping[str, str] | None = None) -> Server:
    config = tmp / f"config-{name}"
    config.mkdir()
    for file in files:  # a name of workflows/, or a file made by the scenario
        shutil.copy(WORKFLOWS / file, config / Path(file).name)
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--database", database]
    return spawn(stack, name, argv, port, tmp / f"{name}.log", env)


def check_echo(answer: Any, who: str) -> None:
    expected = {"status": "success", "response": {"greeting": "Hello Ada", "count": 3}}
    if answer != expected:
        raise BenchError(f"{who} answered {answer!r}, expected {expected!r}")


def check_contact(answer: Any, who: str) -> None:
    expected = {"status": "success", "response": CONTACT_REPLY}
    if answer != expected:
        raise BenchError(f"{who} answered {answer!r}, expected {expected!r}")


def check_success(answer: Any, who: str, key: str) -> None:
    if not (isinstance(answer, dict) and answer.get("status") == "success"
            and key in answer.get("response", {})):
        raise BenchError(f"{who} answered {answer!r}, expected a success with {key!r}")


def trivial(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int) -> list[Row]:
    server = start_gateway(stack, tmp, "gateway", ["echo.yaml"],
                           f"sqlite:///{tmp / 'trivial.db'}")
    check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
    rows = drive(wrk, server, "trivial", f"{PREFIX}/echo", fixed_body(ECHO), seconds)
    stop(server.process)
    return rows


def metrics_cost(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int,
                 rounds: int = 3) -> list[Row]:
    """The trivial echo with metrics on (the default) and off, alternated `rounds` times so
    that the machine's drift weighs on both alike; prints what metrics cost."""
    rows: list[Row] = []
    for index in range(rounds):
        for label, files in (("metrics-on", ["echo.yaml"]),
                             ("metrics-off", ["echo.yaml", "no_metrics.yaml"])):
            name = f"gateway-{label}-{index}"
            server = start_gateway(stack, tmp, name, files, f"sqlite:///{tmp / (name + '.db')}")
            check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
            found = drive(wrk, server, "trivial", f"{PREFIX}/echo", fixed_body(ECHO), seconds)
            rows += [replace(row, server=label) for row in found]
            stop(server.process)
    for connections in sorted({row.connections for row in rows}, reverse=True):
        on = [r.rps for r in rows if r.server == "metrics-on" and r.connections == connections]
        off = [r.rps for r in rows if r.server == "metrics-off" and r.connections == connections]
        ratio = (sum(on) / len(on)) / (sum(off) / len(off))
        print(f"  metrics at c={connections}: {sum(on) / len(on):.0f} req/s on, "
              f"{sum(off) / len(off):.0f} off: {ratio:.3f}x ({(1 - ratio) * 100:+.1f}% lost)")
    return rows


# --- tracing -----------------------------------------------------------------------------

class Receiver:
    """A stand-in OTLP/HTTP trace collector on loopback, in this process: it reads the body of
    every `POST /v1/traces` (without decoding it) and answers 200 with an empty
    `ExportTraceServiceResponse` (zero bytes of protobuf), counting requests and bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:
                body = self.body()
                found = self.path == "/v1/traces"
                if found:
                    with receiver.lock:
                        receiver.requests += 1
                        receiver.bytes += len(body)
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> tuple[int, int]:
        """The requests and bytes received since the last call."""
        with self.lock:
            got = self.requests, self.bytes
            self.requests = self.bytes = 0
        return got

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def span_counts(server: Server) -> dict[str, float]:
    """The `gateway_trace_spans_*` samples of the server's /metrics (public in
    `workflows/tracing.yaml`)."""
    with urlrequest.urlopen(server.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("gateway_trace_spans_") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    if not found:
        raise BenchError(f"{server.name}: /metrics shows no gateway_trace_spans_* sample")
    return found


def shown(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in sorted(counts.items()))


def tracing_cost(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int,
                 rounds: int = 3, ratio: float = 1.0) -> list[Row]:
    """The trivial echo with tracing off (the default) and on (`workflows/tracing.yaml`,
    `ratio` of the traces sampled: by default every one), exporting to a `Receiver` on
    loopback; alternated `rounds` times, which goes first swapped each round. Prints what
    tracing costs, and the receiver's counts."""
    receiver = Receiver()
    stack.callback(receiver.close)
    print(f"  OTLP/HTTP receiver at {receiver.endpoint}/v1/traces; sample_ratio {ratio:g}")
    settings = tmp / "tracing.yaml"
    settings.write_text((WORKFLOWS / "tracing.yaml").read_text().replace(
        "sample_ratio: 1.0", f"sample_ratio: {ratio:g}"))
    runs: tuple[tuple[str, list[str], dict[str, str]], ...] = (
        ("tracing-off", ["echo.yaml"], {}),
        ("tracing-on", ["echo.yaml", str(settings)],
         {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}))
    rows: list[Row] = []
    for index in range(rounds):
        for label, files, env in (runs if index % 2 == 0 else runs[::-1]):
            name = f"gateway-{label}-{index}"
            server = start_gateway(stack, tmp, name, files, f"sqlite:///{tmp / (name + '.db')}",
                                   env)
            check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
            found = drive(wrk, server, "trivial", f"{PREFIX}/echo", fixed_body(ECHO), seconds)
            rows += [replace(row, server=label) for row in found]
            if env:
                print(f"  {name}: /metrics {shown(span_counts(server))}; "
                      f"peak RSS {found[0].rss_mib:.1f} MiB")
            stop(server.process)  # sends what still waits
            if env:
                requests, size = receiver.take()
                print(f"  receiver got {requests} export requests, {size / MIB:.1f} MiB "
                      f"from {name}")
    for connections in sorted({row.connections for row in rows}, reverse=True):
        on = [r.rps for r in rows if r.server == "tracing-on" and r.connections == connections]
        off = [r.rps for r in rows if r.server == "tracing-off" and r.connections == connections]
        ratio = (sum(on) / len(on)) / (sum(off) / len(off))
        print(f"  tracing at c={connections}: {sum(on) / len(on):.0f} req/s on, "
              f"{sum(off) / len(off):.0f} off: {ratio:.3f}x ({(1 - ratio) * 100:+.1f}% lost; "
              f"target >= 0.8x: {'PASS' if ratio >= 0.8 else 'MISS'})")
    for label in ("tracing-off", "tracing-on"):
        rss = [r.rss_mib for r in rows if r.server == label]
        print(f"  peak RSS {label}: {min(rss):.1f}-{max(rss):.1f} MiB")
    return rows


def tracing_down(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int,
                 passes: int = 3) -> list[Row]:
    """Tracing on, every trace sampled, its collector a closed loopback port: driven
    `passes` times, printing the spans exported and dropped (from /metrics) and the peak RSS
    after each, which should level off (the export queue is bounded)."""
    closed = free_port()  # bound, then closed: nothing listens there
    name = "gateway-tracing-down"
    server = start_gateway(stack, tmp, name, ["echo.yaml", "tracing.yaml"],
                           f"sqlite:///{tmp / (name + '.db')}",
                           {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"})
    check_echo(wait_ready(server, f"{PREFIX}/echo", ECHO), server.name)
    print(f"  receiver down: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{closed} (closed)")
    rows: list[Row] = []
    for index in range(passes):
        found = drive(wrk, server, "trivial", f"{PREFIX}/echo", fixed_body(ECHO), seconds)
        rows += [replace(row, server="tracing-down") for row in found]
        print(f"  pass {index + 1}: /metrics {shown(span_counts(server))}; "
              f"peak RSS {found[0].rss_mib:.1f} MiB")
    began = time.monotonic()
    stop(server.process, timeout=DOWN_STOP_SECONDS)  # the last export waits for its timeout
    print(f"  stopped in {time.monotonic() - began:.1f} s (exit status "
          f"{server.process.returncode}; SIGKILL after {DOWN_STOP_SECONDS:.0f} s)")
    return rows


def typical(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int) -> list[Row]:
    server = start_gateway(stack, tmp, "gateway-typical", ["typical.yaml"],
                           f"sqlite:///{tmp / 'typical.db'}")
    check_contact(wait_ready(server, f"{PREFIX}/contact", CONTACT), server.name)
    rows = drive(wrk, server, "typical", f"{PREFIX}/contact", fixed_body(CONTACT), seconds)
    stop(server.process)
    return [replace(row, server="gateway") for row in rows]


def create(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int, label: str,
           database: str) -> list[Row]:
    server = start_gateway(stack, tmp, f"gateway-{label}-c", ["leads.yaml"], database)
    body = {"name": "Probe", "email": "probe@example.com"}
    check_success(wait_ready(server, f"{PREFIX}/create-lead", body), server.name, "id")
    env = {"BENCH_MODE": "create", "BENCH_STAMP": str(time.time_ns())}
    rows = drive(wrk, server, "create", f"{PREFIX}/create-lead", env, seconds)
    stop(server.process)
    return [replace(row, server=f"gateway-{label}") for row in rows]


def search(wrk: str, stack: contextlib.ExitStack, tmp: Path, seconds: int, label: str,
           database: str) -> tuple[list[Row], float]:
    seed_seconds, search_p50 = asyncio.run(seed(database))
    print(f"  seeded {SEEDED} leads on {label} in {seed_seconds:.1f} s; storage search p50 "
          f"{search_p50:.3f} ms over {SEARCH_SAMPLES} lookups")
    server = start_gateway(stack, tmp, f"gateway-{label}-s", ["leads.yaml"], database)
    answer = wait_ready(server, f"{PREFIX}/find-leads", {"email": "lead7@example.com"})
    check_success(answer, server.name, "count")
    if answer["response"]["count"] != 1:
        raise BenchError(f"{server.name}: find-leads found {answer['response']['count']} "
                         "leads for lead7@example.com, expected 1")
    env = {"BENCH_MODE": "search", "BENCH_SEEDED": str(SEEDED)}
    rows = drive(wrk, server, "search", f"{PREFIX}/find-leads", env, seconds)
    stop(server.process)
    return [replace(row, server=f"gateway-{label}") for row in rows], search_p50


async def seed(database: str) -> tuple[float, float]:
    """Creates SEEDED leads through the storage API; returns (seconds, search p50 in ms)."""
    storage = open_storage(database)
    await storage.open(storage_types(load([WORKFLOWS / "leads.yaml"])))
    try:
        began = time.perf_counter()
        for start in range(0, SEEDED, SEED_BATCH):
            await asyncio.gather(*(storage.records.create("lead", {
                "name": f"Lead {i}", "email": f"lead{i}@example.com"})
                for i in range(start, min(start + SEED_BATCH, SEEDED))))
        seeded = time.perf_counter() - began
        timings = []
        for _ in range(SEARCH_SAMPLES):
            email = f"lead{random.randrange(SEEDED)}@example.com"
            began = time.perf_counter()
            page = await storage.records.search("lead", [Constraint("email", "equals", email)],
                                                limit=10)
            timings.append(time.perf_counter() - began)
            if page.count != 1:
                raise BenchError(f"storage search for {email} found {page.count}, expected 1")
    finally:
        await storage.close()
    return seeded, sorted(timings)[len(timings) // 2] * 1000


# --- PostgreSQL --------------------------------------------------------------------------

@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh `gateway_bench` database on the server of `url`, dropped afterwards."""
    parts = urlparse.urlsplit(url)
    bench = urlparse.urlunsplit(parts._replace(path="/gateway_bench"))
    admin = urlparse.urlunsplit(parts._replace(path=parts.path or "/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS gateway_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE gateway_bench")
    except psycopg.Error as exc:
        raise BenchError(f"cannot create the database gateway_bench at {url}: {exc}") from exc
    try:
        yield bench
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS gateway_bench WITH (FORCE)")


# --- report ------------------------------------------------------------------------------

COLUMNS = ("scenario", "server", "conns", "req/s", "p50 ms", "p99 ms", "peak RSS MiB",
           "gateway/bare", "target", "result")


def judged(rows: list[Row], search_p50: Mapping[str, float]) -> list[Row]:
    bare = {r.connections: r.rps for r in rows if r.server == "bare"}
    out = []
    for row in rows:
        if row.server != "bare" and row.connections in bare:
            row = replace(row, ratio=row.rps / bare[row.connections])
        out.append(judge(row))
    for label, p50 in search_p50.items():
        ok = p50 < 5.0
        out.append(Row("search", f"storage-{label}", 1, 0.0, p50, 0.0, target="p50 < 5 ms",
                       verdict="PASS" if ok else "MISS"))
    return out


def judge(row: Row) -> Row:
    targets = []
    if row.server != "bare":
        targets.append(("RSS ≤ 64", row.rss_mib <= 64))
    if row.connections == 64 and row.ratio is not None:
        if row.scenario == "trivial":
            targets.append(("≥ 0.6×", row.ratio >= 0.6))
        if row.scenario == "typical":
            targets.append(("≥ 0.65×", row.ratio >= 0.65))
        if row.scenario == "create" and row.server == "gateway-sqlite":
            targets.append(("≥ 0.2×", row.ratio >= 0.2))
    if not targets:
        return row
    verdict = "PASS" if all(ok for _, ok in targets) else "MISS"
    return replace(row, target=", ".join(t for t, _ in targets), verdict=verdict)


def cells(row: Row) -> list[str]:
    storage = row.server.startswith("storage-")
    return [row.scenario, row.server, "in-process" if storage else str(row.connections),
            "" if storage else f"{row.rps:.0f}", f"{row.p50_ms:.2f}",
            "" if storage else f"{row.p99_ms:.2f}", "" if storage else f"{row.rss_mib:.1f}",
            "" if row.ratio is None else f"{row.ratio:.2f}", row.target, row.verdict]


def print_tables(rows: list[Row]) -> None:
    table = [list(COLUMNS), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    print()
    for line in table:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    print("\n" + "| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for line in table[1:]:
        print("| " + " | ".join(line) + " |")


# --- main --------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--scenario", choices=["trivial", "typical", "create", "search", "metrics",
                                               "tracing", "tracing-down", "all"],
                        default="all")
    parser.add_argument("--rounds", type=int, default=3,
                        help="metrics, tracing: how many times to alternate on and off")
    parser.add_argument("--passes", type=int, default=3,
                        help="tracing-down: how many times to drive the server")
    parser.add_argument("--sample-ratio", type=float, default=1.0,
                        help="tracing: the share of traces sampled (default: every one)")
    parser.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"),
                        help="also run create and search on PostgreSQL at this URL "
                             "(default: $GATEWAY_TEST_POSTGRES_URL)")
    return parser.parse_args(argv)


def bench(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path) -> list[Row]:
    wrk = find_wrk()
    wanted = ({"trivial", "typical", "create", "search"} if args.scenario == "all"
              else {args.scenario})
    print(f"bare Starlette app, one worker, {args.duration} s per run")
    bare = start_bare(stack, tmp)
    rows = drive(wrk, bare, "trivial", f"{PREFIX}/echo", fixed_body(ECHO), args.duration)
    stop(bare.process)
    if "trivial" in wanted:
        rows += trivial(wrk, stack, tmp, args.duration)
    if "typical" in wanted:
        rows += typical(wrk, stack, tmp, args.duration)
    if "metrics" in wanted:
        rows += metrics_cost(wrk, stack, tmp, args.duration, args.rounds)
    if "tracing" in wanted:
        rows += tracing_cost(wrk, stack, tmp, args.duration, args.rounds, args.sample_ratio)
    if "tracing" in wanted or "tracing-down" in wanted:
        rows += tracing_down(wrk, stack, tmp, args.duration, args.passes)
    databases = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
    search_p50: dict[str, float] = {}
    for label, pg_url in databases:
        for scenario in ("create", "search"):
            if scenario not in wanted:
                continue
            with contextlib.ExitStack() as db:
                url = db.enter_context(postgres_database(pg_url)) if pg_url else \
                    f"sqlite:///{tmp / f'{scenario}.db'}"
                if scenario == "create":
                    rows += create(wrk, stack, tmp, args.duration, label, url)
                else:
                    found, search_p50[label] = search(wrk, stack, tmp, args.duration, label, url)
                    rows += found
    return judged(rows, search_p50)


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM stops the servers like Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, \
                contextlib.ExitStack() as stack:
            rows = bench(args, stack, Path(tmp))
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
