"""Memory of a 5 MB image through a real server: created through the Data API in Bubble's
object form (base64 in JSON), then read back whole through its signed link.

    python tests/bench/file_bench.py [--megabytes 5] [--rounds 3]

Starts `gateway serve` (one process), makes an admin key, warms the server up with one
small image (so that what a first upload loads, Pillow among it, counts as idle), then
reads the server's resident memory (VmRSS) and its peak (VmHWM, reset before each round)
from /proc while the uploads and downloads run. Runs on a fresh SQLite file, and on a fresh
PostgreSQL database when GATEWAY_TEST_POSTGRES_URL is set; the file store is a folder.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

CONFIG = """kind: settings
files: {folder: FOLDER}
limits: {max_file_bytes: 20000000}
---
kind: data_type
name: listing
api: {expose: true}
fields:
  photo: {type: image, private: true}
"""


def picture(megabytes: float) -> bytes:
    """A PNG of random pixels (which do not compress) of about `megabytes`."""
    side = int((megabytes * 1_000_000 / 3) ** 0.5)
    rng = random.Random(1)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid`, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS


def measure(database: str, folder: Path, data: bytes, rounds: int) -> list[int]:
    config = folder / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(
        CONFIG.replace("FOLDER", str(folder / "kept")))
    gateway = [sys.executable, "-m", "gateway"]
    made = subprocess.run([*gateway, "keys", "create", "--label", "bench", "--config",
                           str(config), "--database", database], check=True,
                          capture_output=True, text=True, cwd=run.ROOT)
    key = made.stdout.strip().splitlines()[-1]
    port = run.free_port()
    server = subprocess.Popen(
        [*gateway, "serve", "--config", str(config), "--database", database, "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=run.ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, admin = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            one_round(client, admin, picture(0.01))  # loads what a first upload loads
            peaks = []
            for _ in range(rounds):
                idle, _ = memory(server.pid)
                reset_peak(server.pid)
                one_round(client, admin, data)
                _, peak = memory(server.pid)
                peaks.append(peak - idle)
            return peaks
    finally:
        server.terminate()
        server.wait(30)


def one_round(client: httpx.Client, admin: dict[str, str], data: bytes) -> None:
    body = {"photo": {"filename": "big.png", "contents": base64.b64encode(data).decode()}}
    made = client.post("/api/1.1/obj/listing", json=body, headers=admin)
    assert made.status_code == 201, made.text
    record = client.get(f"/api/1.1/obj/listing/{made.json()['id']}", headers=admin).json()
    link = record["response"]["photo"]
    assert "signature=" in link
    size = 0
    with client.stream("GET", link) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            size += len(chunk)
    assert size == len(data), (size, len(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = picture(args.megabytes)
    print(f"image: {len(data):,} bytes ({len(base64.b64encode(data)):,} in base64)")
    databases = [("sqlite", None)]
    if os.environ.get("GATEWAY_TEST_POSTGRES_URL"):
        databases.append(("postgresql", os.environ["GATEWAY_TEST_POSTGRES_URL"]))
    for name, url in databases:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if url is None:
                peaks = measure(f"sqlite:///{folder / 'bench.db'}", folder, data, args.rounds)
            else:
                with run.postgres_database(url) as database:
                    peaks = measure(database, folder, data, args.rounds)
        shown = ", ".join(f"{p / 1024:.1f}" for p in peaks)
        print(f"{name}: peak RSS above idle per round (MiB): {shown}; "
              f"worst {max(peaks) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
