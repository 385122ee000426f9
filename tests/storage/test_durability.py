"""An acknowledged SQLite write survives the death of the process that made it.

A child process creates records as fast as it can (64 at a time) and prints each id only
after `create()` returned; the test kills it with SIGKILL mid-load, reopens the file, and
checks that every printed id is there.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import asyncio, sys
from gateway.storage import open_storage

async def worker(storage, n):
    while True:
        record = await storage.records.create("note", {"n": n, "text": "x" * 200})
        sys.stdout.write(record.id + "\\n")
        sys.stdout.flush()

async def main():
    storage = open_storage(sys.argv[1])
    await storage.open()
    await asyncio.gather(*(worker(storage, n) for n in range(64)))

asyncio.run(main())
"""


def read_acknowledged(child: subprocess.Popen[str], wanted: int, timeout: float) -> list[str]:
    """Lines printed by the child, until `wanted` of them arrived (or fail after `timeout`)."""
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while len(lines) < wanted:
            left = deadline - time.monotonic()
            assert left > 0, (
                f"the writer acknowledged only {len(lines)} of {wanted} records in {timeout}s"
            )
            if selector.select(left):
                line = child.stdout.readline()
                assert line, f"the writer exited early: {child.wait()}"
                lines.append(line.strip())
    return lines


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        acknowledged = read_acknowledged(child, wanted=2000, timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    # Complete lines printed before the kill were acknowledged too; a torn last line was not.
    acknowledged += [line for line in rest.split("\n")[:-1] if line]
    assert child.returncode == -signal.SIGKILL

    storage = open_storage(url)
    await storage.open()
    try:
        missing = [id for id in acknowledged if await storage.records.get("note", id) is None]
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged records lost"
        assert (await storage.records.search("note")).count >= len(acknowledged)
    finally:
        await storage.close()
