"""The idempotency store itself, on both backends: answers outlive a restart, claims made
together (one batch on PostgreSQL, one turn of the event loop on SQLite) are decided one
by one, and SQLite's memory of keys stays within its bounds and reads forgotten keys back
from the database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.core.encoding import iso
from gateway.core.errors import StorageUnavailableError
from gateway.storage import Storage, open_storage
from gateway.storage.common.batching import Batcher
from gateway.storage.common.sql_files import migrations
from gateway.storage.contract import IdempotencyStore, RunLogLimits
from gateway.storage.postgresql.idempotency_store import BATCH, PostgresIdempotency
from gateway.storage.sqlite.idempotency_store import SqliteIdempotency
from gateway.storage.sqlite.key_memory import KeyMemory, claimed

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)
EXPIRES = NOW + timedelta(hours=1)
PRECISE = EXPIRES + timedelta(microseconds=500_004)
# An answer as odd as a workflow may give: every byte value, a header with quotes.
BODY = bytes(range(256)) * 4
HEADERS = {"X-Event": 'evt "1" \u00e9', "content-type": "application/octet-stream"}


@asynccontextmanager
async def opened(url: str, memory: KeyMemory | None = None) -> AsyncIterator[Storage]:
    storage = open_storage(url)
    if memory is not None:
        assert isinstance(storage.idempotency, SqliteIdempotency)
        storage.idempotency.memory = memory
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def answer(storage: Storage, key: str, status: int = 201) -> None:
    claim = await storage.idempotency.claim("hook", key, f"owner-{key}", NOW, LEASE, EXPIRES)
    assert claim.state == "claimed", (key, claim)
    await finish(storage.idempotency, key, f"owner-{key}", status, HEADERS, BODY)


async def finish(store: IdempotencyStore, key: str, owner: str, status: int,
                 headers: dict[str, str], body: bytes) -> None:
    """An answer handed over, and what the store says to await awaited."""
    wait = store.finish("hook", key, owner, status, headers, body, EXPIRES)
    if wait is not None:
        await wait


async def test_an_answer_outlives_a_restart(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        await answer(storage, "k1", 422)
    async with opened(storage_url) as storage:
        found = await storage.idempotency.claim("hook", "k1", "other", NOW, LEASE, EXPIRES)
        assert (found.state, found.status, found.body) == ("done", 422, BODY)
        assert dict(found.headers) == HEADERS
        later = NOW + timedelta(hours=2)  # past its ttl: claimed afresh
        again = await storage.idempotency.claim("hook", "k1", "other", later,
                                                later + timedelta(minutes=5),
                                                later + timedelta(hours=1))
        assert again.state == "claimed"


async def test_a_run_in_progress_at_a_stop(storage_url: str) -> None:
    """PostgreSQL keeps the claim (the key is busy until its lease ends); SQLite keeps
    claims in memory only, so after a restart the redelivery runs again at once."""
    async with opened(storage_url) as storage:
        claim = await storage.idempotency.claim("hook", "k1", "crashed", NOW, LEASE, EXPIRES)
        assert claim.state == "claimed"
    async with opened(storage_url) as storage:
        found = await storage.idempotency.claim("hook", "k1", "next", NOW, LEASE, EXPIRES)
        expected = "claimed" if storage_url.startswith("sqlite") else "running"
        assert found.state == expected


async def test_claims_made_together_are_decided_one_by_one(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        store = storage.idempotency
        await answer(storage, "done")
        claims = await asyncio.gather(
            *(store.claim("hook", f"k{n}", f"o{n}", NOW, LEASE, EXPIRES) for n in range(300)),
            *(store.claim("hook", "same", f"s{n}", NOW, LEASE, EXPIRES) for n in range(50)),
            *(store.claim("hook", "done", f"d{n}", NOW, LEASE, EXPIRES) for n in range(5)))
        assert all(claim.state == "claimed" for claim in claims[:300])
        same = [claim.state for claim in claims[300:350]]
        assert same.count("claimed") == 1 and same.count("running") == 49
        assert all(claim.state == "done" and claim.body == BODY for claim in claims[350:])
        await finish(store, "k7", "o7", 200, {}, b"seven")
        await store.release("hook", "k8", "o8")
        await finish(store, "k9", "not-the-owner", 200, {}, b"nine")
        if isinstance(store, PostgresIdempotency):
            await store.flush()  # its answers on their way are replayed until stored
        replay = await store.claim("hook", "k7", "x", NOW, LEASE, EXPIRES)
        assert (replay.state, replay.body) == ("done", b"seven")
        assert (await store.claim("hook", "k8", "x", NOW, LEASE, EXPIRES)).state == "claimed"
        assert (await store.claim("hook", "k9", "x", NOW, LEASE, EXPIRES)).state == "running"


async def test_sqlite_memory_stays_bounded_and_reads_forgotten_keys_back(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    memory = KeyMemory(most=3, most_bytes=3 * len(BODY))
    async with opened(url, memory) as storage:
        store = storage.idempotency
        assert isinstance(store, SqliteIdempotency)
        for n in range(10):
            await answer(storage, f"k{n}")
            await store.flush()  # in the database: free to be forgotten
        assert len(memory.keys) <= 3 and memory.bytes <= 3 * len(BODY)
        for n in range(10):
            found = await store.claim("hook", f"k{n}", "again", NOW, LEASE, EXPIRES)
            assert (found.state, found.body) == ("done", BODY), n
        assert (await store.claim("hook", "new", "o", NOW, LEASE, EXPIRES)).state == "claimed"
    # Keys in the database at start, memory empty: every unknown key is looked up.
    async with opened(url, KeyMemory(most=3)) as storage:
        store = storage.idempotency
        assert isinstance(store, SqliteIdempotency)
        assert not store.memory.keys and store.memory.horizon == EXPIRES.timestamp()
        found = await store.claim("hook", "k4", "again", NOW, LEASE, EXPIRES)
        assert found.state == "done"
        assert (await store.claim("hook", "k99", "o", NOW, LEASE, EXPIRES)).state == "claimed"


async def test_sqlite_answers_not_yet_committed_are_never_forgotten(tmp_path: Path) -> None:
    memory = KeyMemory(most=2)
    async with opened(f"sqlite:///{tmp_path / 'g.db'}", memory) as storage:
        for n in range(4):  # all in one turn of the event loop: none committed yet
            await answer(storage, f"k{n}")
        assert len(memory.keys) == 4  # over the bound of 2, under twice it (no waiting)
        for n in range(4):
            found = await storage.idempotency.claim("hook", f"k{n}", "x", NOW, LEASE, EXPIRES)
            assert found.state == "done"


def counted(path: Path) -> tuple[int, int]:
    """The answers a SQLite file holds, and the keys of them indexed."""
    with sqlite3.connect(path) as conn:
        return (conn.execute("SELECT count(*) FROM gateway_idempotency_answers").fetchone()[0],
                conn.execute("SELECT count(*) FROM gateway_idempotency_slots").fetchone()[0])


async def test_sqlite_keys_are_indexed_in_batches_and_memory_keeps_the_rest(
        tmp_path: Path) -> None:
    memory = KeyMemory(most=4)  # keys indexed 2 at a time
    async with opened(f"sqlite:///{tmp_path / 'g.db'}", memory) as storage:
        store = storage.idempotency
        assert isinstance(store, SqliteIdempotency)
        await answer(storage, "k0")
        await asyncio.sleep(0)  # handed to the writer
        assert store._last is not None
        await asyncio.wait([store._last])
        assert counted(tmp_path / "g.db") == (1, 0)  # stored, not yet indexed
        assert memory.committed == 0  # so memory may not forget it
        for n in range(1, 7):
            await answer(storage, f"k{n}")
            await asyncio.sleep(0)
            await asyncio.wait([store._last])
        assert counted(tmp_path / "g.db") == (7, 6)
        assert len(memory.keys) <= 4 + 1  # the bound, and the answer not yet indexed
        for n in range(7):  # from memory or from the database, each answered once
            found = await store.claim("hook", f"k{n}", "again", NOW, LEASE, EXPIRES)
            assert (found.state, found.body) == ("done", BODY), n


async def test_sqlite_answers_a_crash_left_unindexed_are_indexed_at_start(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    async with opened(url) as storage:
        await answer(storage, "k0")
    assert counted(tmp_path / "g.db") == (1, 1)  # a stop indexes what it stored
    with sqlite3.connect(tmp_path / "g.db") as conn:  # what a crash leaves: answers only
        conn.executemany("INSERT INTO gateway_idempotency_answers "
                         "(scope, key, expires_at, status, headers, body) VALUES "
                         "(?, ?, ?, 201, '{}', ?)",
                         [("hook", f"k{n}", EXPIRES.timestamp(), BODY) for n in (1, 2)])
    assert counted(tmp_path / "g.db") == (3, 1)
    async with opened(url) as storage:  # memory: every key unknown
        assert counted(tmp_path / "g.db") == (3, 3)
        for n in range(3):
            found = await storage.idempotency.claim("hook", f"k{n}", "x", NOW, LEASE, EXPIRES)
            assert (found.state, found.status, found.body) == ("done", 201, BODY)
        assert (await storage.idempotency.claim("hook", "k3", "x", NOW, LEASE,
                                                EXPIRES)).state == "claimed"


async def test_sqlite_answers_after_a_purge_of_every_answer_are_found(tmp_path: Path) -> None:
    # The purge keeps the newest answer, so that ids are never given again: an answer with
    # an id at or below the last one indexed would never be indexed, nor found.
    url = f"sqlite:///{tmp_path / 'g.db'}"
    async with opened(url) as storage:
        await answer(storage, "k0")
        await answer(storage, "k1")
        await storage.idempotency.flush()
        assert await storage.idempotency.purge_keys(EXPIRES + timedelta(days=1)) == 1
        await answer(storage, "k2")
    async with opened(url) as storage:  # every key looked up
        found = await storage.idempotency.claim("hook", "k2", "x", NOW, LEASE, EXPIRES)
        assert (found.state, found.body) == ("done", BODY)
        late = EXPIRES + timedelta(seconds=1)  # the one left after the purge: expired
        assert (await storage.idempotency.claim("hook", "k1", "x", late, late,
                                                late + timedelta(hours=1))).state == "claimed"


async def test_sqlite_answers_of_the_old_layout_are_kept_by_the_upgrade(
        tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with opened(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:  # back to before 0007, with the old table's rows
        conn.executescript("DROP TABLE gateway_idempotency_answers; "
                           "DROP TABLE gateway_idempotency_slots; "
                           "DROP TABLE gateway_idempotency_indexed;")
        old = next(m for m in migrations("sqlite") if m.name == "0005_idempotency")
        conn.executescript(old.sql.split("-- Rate-limit counters")[0])
        conn.execute("DELETE FROM gateway_migrations WHERE name IN "
                     "('0007_idempotency_answers', '0008_idempotency_seconds')")
        row = "INSERT INTO gateway_idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        conn.execute(row, ("hook", "done", "o", "done", EXPIRES.isoformat(),
                           EXPIRES.isoformat(), 409, '{"X-A": "1"}', b"\x00old"))
        conn.execute(row, ("hook", "fine", "o", "done", iso(PRECISE), iso(PRECISE), 200,
                           "{}", b"fine"))
        conn.execute(row, ("hook", "busy", "o", "running", LEASE.isoformat(),
                           EXPIRES.isoformat(), None, None, None))
    async with opened(f"sqlite:///{path}") as storage:
        store = storage.idempotency
        found = await store.claim("hook", "done", "x", NOW, LEASE, EXPIRES)
        assert (found.state, found.status, dict(found.headers), found.body) == \
            ("done", 409, {"X-A": "1"}, b"\x00old")
        # A claim's row (never written by this layout's store) is not kept: free at once.
        assert (await store.claim("hook", "busy", "x", NOW, LEASE, EXPIRES)).state == "claimed"
    assert counted(path) == (2, 2)
    with sqlite3.connect(path) as conn:  # its expiry, as Unix seconds now, is the same instant
        stored = conn.execute("SELECT key, expires_at FROM gateway_idempotency_answers")
        assert dict(stored.fetchall()) == {  # (to the microsecond: the ttl is exact)
            "done": EXPIRES.timestamp(), "fine": PRECISE.timestamp()}
    async with opened(f"sqlite:///{path}") as storage:
        # read back from the database: still there 10 ms before its expiry
        soon = EXPIRES - timedelta(milliseconds=10)
        found = await storage.idempotency.claim("hook", "done", "x", soon, soon, EXPIRES)
        assert (found.state, found.status) == ("done", 409)


@pytest.mark.postgres
async def test_postgresql_claims_wait_for_their_batch_and_fail_together(
        postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    await storage.open()
    await storage.close()  # the pool is closed: each claim of the batch gets the error
    claims = await asyncio.gather(*(storage.idempotency.claim(
        "hook", f"k{n}", "o", NOW, LEASE, EXPIRES) for n in range(3)), return_exceptions=True)
    assert all(isinstance(claim, StorageUnavailableError) for claim in claims), claims


@pytest.mark.postgres
async def test_postgresql_a_claim_whose_caller_stopped_waiting_is_released(
        postgres_url: str) -> None:
    async with opened(postgres_url) as storage:
        store = storage.idempotency
        waiting = asyncio.create_task(store.claim("hook", "k1", "gone", NOW, LEASE, EXPIRES))
        await asyncio.sleep(0)  # the claim is on its way
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with asyncio.timeout(10):  # until the abandoned claim is given back
            while (await store.claim("hook", "k1", "next", NOW, LEASE, EXPIRES)).state \
                    != "claimed":
                await asyncio.sleep(0.01)


async def test_sqlite_answers_wait_for_the_writer_past_twice_the_bound(tmp_path: Path) -> None:
    # The writer far behind (nothing committed in this turn): past twice the bound, finishing
    # waits for the database, and memory sheds what it then holds.
    memory = KeyMemory(most=2)
    async with opened(f"sqlite:///{tmp_path / 'g.db'}", memory) as storage:
        for n in range(5):
            await answer(storage, f"k{n}")
        assert memory.committed >= 1  # the last answer waited for the writer
        await storage.idempotency.claim("hook", "fresh", "o", NOW, LEASE, EXPIRES)
        assert len(memory.keys) <= 2  # the committed answers forgotten
        for n in range(5):
            found = await storage.idempotency.claim("hook", f"k{n}", "x", NOW, LEASE, EXPIRES)
            assert (found.state, found.body) == ("done", BODY), n


def test_forgetting_passes_running_claims_and_stops_at_an_uncommitted_answer() -> None:
    memory = KeyMemory(most=2)
    later = (NOW + timedelta(hours=1)).timestamp()
    memory.hold(("hook", "running"), claimed("o", later, later))
    for n, written in enumerate([1, 1, 2, 2]):
        slot = ("hook", f"k{n}")
        memory.hold(slot, claimed("o", later, later))
        assert memory.finish(slot, "o", 200, "{}", b"x", written)
    memory.committed = 1
    memory.hold(("hook", "new"), claimed("o", later, later))  # over the bound: shrink
    # k0 and k1 (committed) forgotten, the running claim kept (moved on), k2 and k3 kept
    assert list(memory.keys) == [("hook", "k2"), ("hook", "k3"), ("hook", "new"),
                                 ("hook", "running")]
    # Until write 2 is committed, new keys do not walk again (k2 waits for it); then they do.
    assert memory.waiting == 2
    memory.hold(("hook", "newer"), claimed("o", later, later))
    assert ("hook", "k2") in memory.keys and len(memory.keys) == 5
    memory.committed = 2
    memory.hold(("hook", "newest"), claimed("o", later, later))
    assert ("hook", "k2") not in memory.keys and ("hook", "k3") not in memory.keys


def test_memory_forgets_an_eighth_of_its_bound_at_a_time() -> None:
    memory = KeyMemory(most=64)
    later = (NOW + timedelta(hours=1)).timestamp()
    for n in range(64):
        slot = ("hook", f"k{n}")
        memory.hold(slot, claimed("o", later, later))
        assert memory.finish(slot, "o", 200, "{}", b"x", 1)
    memory.committed = 1
    assert len(memory.keys) == 64  # at the bound: nothing forgotten
    memory.hold(("hook", "one more"), claimed("o", later, later))
    assert len(memory.keys) == 64 - 8 and ("hook", "k8") not in memory.keys
    assert ("hook", "k9") in memory.keys
    # forgotten: the database may hold them (any key memory lacks), until their expiry
    assert memory.horizon == later and memory.maybe_stored(later - 1)
    assert not memory.maybe_stored(later) and memory.horizon is None  # all expired: free
    assert memory.bytes == len(b"x") * (64 - 9)


def test_memory_is_behind_past_twice_either_bound() -> None:
    memory = KeyMemory(most=100, most_bytes=1000)
    later = (NOW + timedelta(hours=1)).timestamp()
    for n in range(3):  # three large answers, none committed: few keys, many bytes
        slot = ("hook", f"big{n}")
        memory.hold(slot, claimed("o", later, later))
        # handed to the writer (write 1), not committed (committed: 0)
        assert memory.finish(slot, "o", 200, "{}", b"x" * 900, 1)
    assert len(memory.keys) == 3 and memory.behind()


@pytest.mark.postgres
async def test_postgresql_answers_go_without_waiting_and_are_replayed_meanwhile(
        postgres_url: str) -> None:
    async with opened(postgres_url) as storage, opened(postgres_url) as other:
        store = storage.idempotency
        assert isinstance(store, PostgresIdempotency)
        assert (await store.claim("hook", "k1", "o1", NOW, LEASE, EXPIRES)).state == "claimed"
        assert store.finish("hook", "k1", "o1", 201, HEADERS, BODY,
                                EXPIRES) is None  # nothing to wait for
        # Not in the database yet: this instance replays it, another finds it running.
        found = await store.claim("hook", "k1", "o2", NOW, LEASE, EXPIRES)
        assert (found.state, found.status, found.body) == ("done", 201, BODY)
        # One on its way past its expiry is not replayed: the database decides (the claim's
        # lease has ended, so the key is claimed afresh, and the late answer is not stored).
        assert (await store.claim("hook", "k2", "o1", NOW, LEASE, EXPIRES)).state == "claimed"
        assert store.finish("hook", "k2", "o1", 201, HEADERS, BODY,
                                EXPIRES) is None
        late = EXPIRES + timedelta(seconds=1)
        assert (await store.claim("hook", "k2", "o2", late, late + timedelta(minutes=5),
                                  late + timedelta(hours=1))).state == "claimed"
        await store.flush()
        found = await other.idempotency.claim("hook", "k1", "o3", NOW, LEASE, EXPIRES)
        assert (found.state, found.status, dict(found.headers), found.body) == \
            ("done", 201, HEADERS, BODY)
        found = await other.idempotency.claim("hook", "k2", "o3", late, late, late)
        assert found.state == "running"  # o2's claim, not o1's late answer


@pytest.mark.postgres
async def test_postgresql_answers_the_database_did_not_take_are_logged_and_forgotten(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    storage = open_storage(postgres_url)
    await storage.open()
    store = storage.idempotency
    assert isinstance(store, PostgresIdempotency)
    try:
        assert (await store.claim("hook", "k1", "o1", NOW, LEASE, EXPIRES)).state == "claimed"
        await storage.connector.stop()  # type: ignore[attr-defined]  # the database gone
        with caplog.at_level("WARNING", logger="gateway.storage"):
            assert store.finish("hook", "k1", "o1", 201, HEADERS, BODY,
                                    EXPIRES) is None
            await store.flush()
        assert "1 idempotent answer(s) were not stored" in caplog.text
        with pytest.raises(StorageUnavailableError):  # not replayed from memory any more
            await store.claim("hook", "k1", "o2", NOW, LEASE, EXPIRES)
    finally:
        await storage.close()


async def twenty_answers_one_refused(url: str, store: PostgresIdempotency) -> list[str]:
    """20 keys claimed, then answered in one batch, the 8th with a status the database
    (given a constraint, as an operator might add one) refuses; their keys."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE gateway_idempotency ADD CONSTRAINT refuse "
                     "CHECK (status IS DISTINCT FROM 418)")
    keys = [f"k{n}" for n in range(20)]
    for key in keys:
        assert (await store.claim("hook", key, "o1", NOW, LEASE, EXPIRES)).state == "claimed"
    for n, key in enumerate(keys):
        store.finish("hook", key, "o1", 418 if n == 7 else 201, HEADERS, BODY,
                         EXPIRES)
    return keys


@pytest.mark.postgres
async def test_postgresql_an_answer_the_database_refuses_is_lost_alone(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with opened(postgres_url) as storage:
        store = storage.idempotency
        assert isinstance(store, PostgresIdempotency)
        with caplog.at_level("WARNING", logger="gateway.storage"):
            keys = await twenty_answers_one_refused(postgres_url, store)
            await store.flush()
        assert "1 idempotent answer(s) were not stored" in caplog.text
        states = [(await store.claim("hook", key, "o2", NOW, LEASE, EXPIRES)).state
                  for key in keys]
        assert states == ["running" if n == 7 else "done" for n in range(20)]


@pytest.mark.postgres
async def test_postgresql_answers_stored_before_an_outage_are_not_counted_lost(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A refused answer splits its batch; a part after it that the database cannot take
    (a connection failure, raised here by a trigger) is lost alone: the parts stored before
    it are not reported lost, and their waiters are not failed."""
    async with opened(postgres_url) as storage:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("""CREATE FUNCTION gone() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'gone' USING ERRCODE = '08006'; END $$""")
            conn.execute("CREATE TRIGGER gone BEFORE UPDATE ON gateway_idempotency "
                         "FOR EACH ROW WHEN (NEW.key = 'k15' AND NEW.state = 'done') "
                         "EXECUTE FUNCTION gone()")
        store = storage.idempotency
        assert isinstance(store, PostgresIdempotency)
        with caplog.at_level("WARNING", logger="gateway.storage"):
            keys = await twenty_answers_one_refused(postgres_url, store)
            await store.flush()
        lost = sorted(int(line.split()[0]) for line in caplog.messages
                      if "idempotent answer(s) were not stored" in line)
        assert sum(lost) == 1 + 10 and 20 not in lost  # k7 alone; then k10-k19, unsent
        states = [(await store.claim("hook", key, "o2", NOW, LEASE, EXPIRES)).state
                  for key in keys]
        assert states == ["done" if n < 10 and n != 7 else "running" for n in range(20)]


async def test_sqlite_large_answers_are_indexed_by_their_bytes_too(tmp_path: Path) -> None:
    # Forty answers of 1 MiB, four at a time, with room for 4 MiB: their keys are indexed
    # once half that many bytes wait (not only every 2,048 answers), so that memory can
    # forget them and holds at most a few of them at once.
    memory = KeyMemory(most=1000, most_bytes=4 * 1024 * 1024)
    big = b"x" * (1024 * 1024)
    peak = 0
    async with opened(f"sqlite:///{tmp_path / 'g.db'}", memory) as storage:
        store = storage.idempotency
        for start in range(0, 40, 4):
            keys = [f"k{n}" for n in range(start, start + 4)]
            for key in keys:
                claim = await store.claim("hook", key, "o", NOW, LEASE, EXPIRES)
                assert claim.state == "claimed"
            await asyncio.gather(*(finish(store, key, "o", 200, HEADERS, big)
                                   for key in keys))
            peak = max(peak, memory.bytes)
        assert peak <= 3 * memory.most_bytes, peak
        found = await store.claim("hook", "k0", "x", NOW, LEASE, EXPIRES)  # read back
        assert (found.state, found.body) == ("done", big)


async def test_a_batch_stops_at_its_bytes() -> None:
    sent: list[list[bytes]] = []

    async def send(items: list[bytes]) -> list[None]:
        sent.append(items)
        return [None] * len(items)

    batcher: Batcher[bytes, None] = Batcher(send, most=BATCH, weigh=len, most_bytes=10)
    await asyncio.gather(*[batcher(b"x" * 4) for _ in range(5)], batcher(b"y" * 30))
    # two of 4 bytes a batch, the one left, then the large one alone: never over 10 bytes
    # but for an item larger than that on its own
    assert [[len(item) for item in batch] for batch in sent] == [[4, 4], [4, 4], [4], [30]]


@pytest.mark.postgres
async def test_postgresql_answers_over_a_batchs_bytes_are_all_stored(postgres_url: str) -> None:
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB: six of them are more than a batch holds
    async with opened(postgres_url) as storage, opened(postgres_url) as other:
        store = storage.idempotency
        assert isinstance(store, PostgresIdempotency)
        for n in range(6):
            assert (await store.claim("hook", f"k{n}", "o", NOW, LEASE, EXPIRES)).state == \
                "claimed"
        for n in range(6):
            store.finish("hook", f"k{n}", "o", 200, HEADERS, big, EXPIRES)
        await store.flush()
        for n in range(6):
            found = await other.idempotency.claim("hook", f"k{n}", "x", NOW, LEASE, EXPIRES)
            assert (found.state, found.body) == ("done", big), n


@pytest.mark.postgres
async def test_postgresql_a_shutdown_waits_for_unsent_answers_only_so_long(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    storage = open_storage(postgres_url)
    await storage.open()
    storage.runs.configure(RunLogLimits(flush_seconds=0.2))
    store = storage.idempotency
    assert isinstance(store, PostgresIdempotency)
    assert (await store.claim("hook", "k1", "o", NOW, LEASE, EXPIRES)).state == "claimed"
    with psycopg.connect(postgres_url) as locker:  # the table locked: the answer cannot go
        locker.execute("LOCK TABLE gateway_idempotency IN EXCLUSIVE MODE")
        store.finish("hook", "k1", "o", 200, HEADERS, BODY, EXPIRES)
        with caplog.at_level("WARNING", logger="gateway.storage"):
            async with asyncio.timeout(30):  # the lock is held for as long as this takes
                await storage.close()
        locker.rollback()
    assert "1 idempotent answer(s) still waited for the database at shutdown" in caplog.text
