"""Idempotency keys and rate-limit counters on PostgreSQL: `IdempotencyStore` and
`RateCounter` over a `PostgresConnector`, shared by every gateway instance on the database.

`INSERT … ON CONFLICT DO UPDATE … WHERE` claims a key atomically: of any number of
concurrent claims, one gets the row back. Claims and answers are sent in batches: the
claims (or answers) that arrive while one statement is on its way go together in the next,
one statement over one JSON document for the whole batch, so that under load a key costs
the database and this process a fraction of a round trip. A request waits for its claim
to be committed, not for its answer: that goes with a coming batch while the request
answers. A crash or an outage in between loses the answer: its key stays claimed until
the claim's lease ends, and a redelivery then runs again (at least once, as on SQLite)."""

from __future__ import annotations

import asyncio
import logging
from base64 import b64encode
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from gateway.core.encoding import dumps
from gateway.core.errors import KeyTakenError, StorageError, StorageUnavailableError
from gateway.storage.common.batching import Batcher, Splitting
from gateway.storage.common.sql_files import queries
from gateway.storage.contract import LOST_KEY, Claim
from gateway.storage.postgresql.connector import PostgresConnector

Q = queries("postgresql")
log = logging.getLogger("gateway.storage")
# A key released between a failed claim and the read of what held it is claimed again;
# past this many tries the request is told the key is in progress.
CLAIM_TRIES = 3
# The most claims (or answers) one statement carries, and the most bytes of answers' bodies
# (a JSON document, hence PostgreSQL's jsonb, holds at most 256 MiB).
BATCH = 256
BATCH_BYTES = 16 * 1024 * 1024
# The most answers (and bytes of their bodies) given and not yet stored before a request
# waits for its own to be.
MOST_PENDING = 4 * BATCH
MOST_PENDING_BYTES = 32 * 1024 * 1024
# How long answers nobody waits for gather before they go (a statement each otherwise when
# requests come one at a time); another instance finds their keys running that much longer.
LINGER = 0.005
RUNNING = Claim("running")
CLAIMED = Claim("claimed")


class Wanted(NamedTuple):
    scope: str
    key: str
    owner: str
    now: datetime
    lease_until: datetime
    expires_at: datetime


class Answer(NamedTuple):
    scope: str
    key: str
    owner: str
    status: int
    headers: Mapping[str, str]
    body: bytes


class PostgresIdempotency:
    """`IdempotencyStore` on a PostgreSQL database."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector
        self._claims: Batcher[Wanted, Claim] = Batcher(
            self._claim_all, most=BATCH, abandoned=self._give_back)
        self._answers: Batcher[Answer, None] = Batcher(
            self._finish_all, most=BATCH, failed=_answers_lost, linger=LINGER,
            weigh=lambda answer: len(answer.body), most_bytes=BATCH_BYTES)
        self._releasing: set[asyncio.Task[None]] = set()  # held until done (asyncio's advice)
        # answers given and not yet stored, with their expiry, by key (`MOST_PENDING` and
        # the requests that wait for theirs, at most)
        self._unsent: dict[tuple[str, str], tuple[Answer, float]] = {}
        self._unsent_bytes = 0

    async def claim(self, scope: str, key: str, owner: str, now: datetime,
                    lease_until: datetime, expires_at: datetime) -> Claim:
        unsent = self._unsent.get((scope, key))
        if unsent is not None and unsent[1] > now.timestamp():
            answer = unsent[0]  # answered here, and on its way to the database
            return Claim("done", answer.status, answer.headers, answer.body)
        return await self._claims(Wanted(scope, key, owner, now, lease_until, expires_at))

    def finish(self, scope: str, key: str, owner: str, status: int,
               headers: Mapping[str, str], body: bytes,
               expires_at: datetime) -> Awaitable[None] | None:
        """The answer goes with a coming batch, and the request answers meanwhile; until it
        is stored, this instance replays it to a repeat of its key (others find the key
        still running), up to `expires_at`, its claim's expiry. What is awaited is only the
        answer past `MOST_PENDING` waiting (the database far behind: requests then go at its
        pace)."""
        answer = Answer(scope, key, owner, status, headers, body)
        replaced = self._unsent.get((scope, key))
        self._unsent[(scope, key)] = (answer, expires_at.timestamp())
        self._unsent_bytes += len(body) - (len(replaced[0].body) if replaced else 0)
        if len(self._answers) < MOST_PENDING and self._unsent_bytes <= MOST_PENDING_BYTES:
            self._answers.later(answer)
            return None
        return self._answers(answer)

    async def flush(self, seconds: float | None = None) -> None:
        """Until every answer handed over is stored (or failed, and logged), for at most
        `seconds`: what is left then is lost when the connections close (and logged)."""
        try:
            async with asyncio.timeout(seconds):
                await self._answers.drained()
        except TimeoutError:
            log.warning("%d idempotent answer(s) still waited for the database at shutdown",
                        len(self._unsent))

    async def release(self, scope: str, key: str, owner: str) -> None:
        await self._db.execute(Q["release_key"], (scope, key, owner))

    async def fence(self, scope: str, key: str, owner: str, lease_until: datetime) -> None:
        """A statement of the run's transaction that must change the claim's row: it holds
        the row until the run commits (a claim of the key from another instance waits,
        then finds the new lease), or refuses the whole transaction."""
        await self._db.execute_later(Q["fence_key"], (lease_until, scope, key, owner),
                                     refusal=KeyTakenError(LOST_KEY))

    async def purge_keys(self, now: datetime) -> int:
        return await self._db.execute(Q["purge_keys"], (now,))

    async def _claim_all(self, wanted: list[Wanted]) -> list[Claim]:
        """One claim statement for the batch (a key wanted twice is sent once: the second
        finds it running), then one read of what holds the keys it did not get."""
        found: dict[tuple[str, str], Claim] = {}
        first: dict[tuple[str, str], Wanted] = {}
        for want in wanted:
            first.setdefault((want.scope, want.key), want)
        for _ in range(CLAIM_TRIES):
            todo = [want for slot, want in first.items() if slot not in found]
            if not todo:
                break
            for scope, key in await self._db.fetch(Q["claim_keys"], _batch(todo)):
                found[(scope, key)] = CLAIMED
            lost = [want for want in todo if (want.scope, want.key) not in found]
            if lost:
                found.update(await self._holders(lost))
        return [_outcome(want, first, found) for want in wanted]

    async def _holders(self, lost: Sequence[Wanted]) -> dict[tuple[str, str], Claim]:
        rows = await self._db.fetch(Q["find_key_claims"], ([w.scope for w in lost],
                                                           [w.key for w in lost]))
        holders = {}
        for scope, key, state, status, headers, body in rows:
            holders[(scope, key)] = (Claim("done", status, headers, bytes(body))
                                     if state == "done" else RUNNING)
        return holders  # a key released meanwhile is missing: claimed again

    async def _finish_all(self, answers: list[Answer]) -> list[None]:
        try:
            await self._store(answers)
        finally:  # stored, or lost: either way the database says what holds the key now
            for answer in answers:
                if self._unsent.get((answer.scope, answer.key), (None,))[0] is answer:
                    del self._unsent[(answer.scope, answer.key)]
                    self._unsent_bytes -= len(answer.body)
        return [None] * len(answers)

    async def _store(self, answers: Sequence[Answer]) -> None:
        """One statement for the answers. One the database refuses (rather than one it
        cannot take now) is split in halves (`Splitting`), down to the answer refused, which
        is lost alone (and logged): the others are stored. Once split, a part the database
        cannot take is lost alone too (and logged), not the parts stored before it."""
        parts = Splitting(answers)
        for part in parts:
            batch = [{"scope": a.scope, "key": a.key, "owner": a.owner, "status": a.status,
                      "headers": a.headers, "body": b64encode(a.body).decode()} for a in part]
            try:
                await self._db.execute(Q["finish_keys"], (dumps(batch),))
            except StorageError as exc:
                unavailable = isinstance(exc, StorageUnavailableError)
                if unavailable and len(part) == len(answers):
                    raise  # the whole batch: its waiters hear of it (and the batcher logs it)
                if unavailable or not parts.split(part):
                    _answers_lost(len(part), exc)

    def _give_back(self, want: Wanted, claim: Claim) -> None:
        """A claim its request no longer waits for (it was cancelled) is released."""
        if claim.state == "claimed":
            task = asyncio.get_running_loop().create_task(
                self.release(want.scope, want.key, want.owner))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)


def _answers_lost(count: int, exc: Exception) -> None:
    log.warning("%d idempotent answer(s) were not stored (a redelivery of them runs again "
                "once its claim's lease ends): %s", count, exc)


def _batch(wanted: Sequence[Wanted]) -> dict[str, Any]:
    """The claims as `claim_keys` takes them: one JSON array (written by orjson, in C) rather
    than an array per column, each element of which the driver writes in Python."""
    return {"claims": dumps([{"scope": w.scope, "key": w.key, "owner": w.owner,
                              "lease": w.lease_until, "expires": w.expires_at}
                             for w in wanted]),
            "now": max(w.now for w in wanted)}


def _outcome(want: Wanted, first: dict[tuple[str, str], Wanted],
             found: dict[tuple[str, str], Claim]) -> Claim:
    slot = (want.scope, want.key)
    claim = found.get(slot, RUNNING)
    if claim.state == "claimed" and first[slot] is not want:
        return RUNNING  # the same key twice in one batch: the first holds it
    return claim


class PostgresRates:
    """`RateCounter` on a PostgreSQL database: one counter for every instance."""

    def __init__(self, connector: PostgresConnector) -> None:
        self._db = connector

    async def hit(self, scope: str, who: str, bucket: int, expires_at: datetime) -> int:
        rows = await self._db.fetch(Q["hit_rate"], (scope, who, bucket, expires_at))
        return int(rows[0][0])

    async def purge_counters(self, now: datetime) -> int:
        return await self._db.execute(Q["purge_rates"], (now,))
