"""The batching helper that the writer's group commit, the run queue, the run log's flusher,
the idempotency batches and the scheduler's ends of jobs all go through."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.core.errors import StorageUnavailableError
from gateway.storage.common.batching import (
    Backlog,
    Batcher,
    Handoff,
    Splitting,
    answer,
    answer_from_thread,
    write_splitting,
)
from gateway.storage.common.run_queue import RunQueue

WAIT = 5.0  # seconds a test waits for a condition before it says what it waited for


def test_a_full_backlog_refuses_an_item_and_keeps_the_others() -> None:
    backlog: Backlog[int] = Backlog(limit=2)
    assert backlog.add(1) and backlog.add(2)
    assert not backlog.add(3)
    assert backlog.take(None) == [1, 2]


def test_a_backlog_with_no_limit_takes_everything() -> None:
    backlog: Backlog[int] = Backlog()
    assert all(backlog.add(n) for n in range(1000))
    assert len(backlog) == 1000


def test_take_gives_the_oldest_items_up_to_most() -> None:
    backlog: Backlog[int] = Backlog()
    for n in range(5):
        backlog.add(n)
    assert backlog.take(2) == [0, 1]
    assert backlog.take(10) == [2, 3, 4]
    assert backlog.take(10) == []


def test_take_stops_at_a_weight_but_takes_one_item_at_least() -> None:
    backlog: Backlog[bytes] = Backlog()
    for item in (b"aaaa", b"bbbb", b"cccc", b"d" * 30, b"e"):
        backlog.add(item)
    assert backlog.take(10, len, 10) == [b"aaaa", b"bbbb"]
    assert backlog.take(10, len, 10) == [b"cccc"]
    assert backlog.take(10, len, 10) == [b"d" * 30]  # heavier than the bound on its own
    assert backlog.take(10, len, 10) == [b"e"]


def test_put_back_goes_in_front_in_order_and_drops_the_newest_beyond_the_limit() -> None:
    backlog: Backlog[int] = Backlog(limit=4)
    for n in range(4):
        backlog.add(n)
    taken = backlog.take(2)
    backlog.add(4)
    backlog.add(5)
    assert backlog.put_back(taken) == 2
    assert backlog.take(None) == [0, 1, 2, 3]


def test_a_run_queue_counts_the_runs_it_drops() -> None:
    runs: RunQueue[str] = RunQueue(limit=2)
    assert runs.add("a") and runs.add("b")
    assert not runs.add("c")
    taken = runs.take(1)
    runs.add("d")
    runs.add("e")  # full again: dropped
    runs.put_back(taken)  # "a" in front, "d" beyond the limit
    assert (runs.take(None), runs.added, runs.dropped) == (["a", "b"], 3, 3)


async def test_each_waiter_gets_its_own_outcome_and_a_cancelled_one_is_passed_over() -> None:
    loop = asyncio.get_running_loop()
    first, second, third = (loop.create_future() for _ in range(3))
    third.cancel()
    error = ValueError("refused")
    gone = answer([first, None, second, third],
                  [(True, 1), (True, 2), (False, error), (True, 3)])
    assert gone == [3]
    assert await first == 1
    with pytest.raises(ValueError, match="refused"):
        await second


async def test_waiters_are_answered_on_their_loop_from_another_thread() -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    thread = threading.Thread(target=answer_from_thread, args=(
        futures, [(True, "a"), (False, KeyError("b")), (True, "c")]))
    thread.start()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*futures, return_exceptions=True)
    thread.join()
    assert results[0] == "a" and isinstance(results[1], KeyError) and results[2] == "c"


def test_a_closed_loop_is_not_answered() -> None:
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    loop.close()
    answer_from_thread([future], [(True, 1)])  # nobody waits: no error
    assert not future.done()


class Sender:
    """A `send` that holds each batch until told to let it go, and records the batches."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.go = asyncio.Event()
        self.go.set()
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def test_items_that_arrive_while_a_batch_is_sent_go_together_in_the_next() -> None:
    send = Sender()
    send.go.clear()
    batcher: Batcher[int, int] = Batcher(send, most=3)
    first = batcher(1)
    async with asyncio.timeout(WAIT):
        while not send.batches:  # the first batch is on its way
            await asyncio.sleep(0)
    rest = [batcher(n) for n in range(2, 7)]
    send.go.set()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(first, *rest)
    assert results == [10, 20, 30, 40, 50, 60]
    assert send.batches == [[1], [2, 3, 4], [5, 6]]


async def test_a_failed_send_gives_its_error_to_every_caller_of_its_batch_only() -> None:
    send = Sender(fail=RuntimeError("down"))
    failed: list[int] = []
    batcher: Batcher[int, int] = Batcher(send, most=2, failed=lambda n, exc: failed.append(n))
    waited = [batcher(1), batcher(2)]
    batcher.later(3)
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*waited, return_exceptions=True)
        await batcher.drained()
    assert [str(result) for result in results] == ["down", "down"]
    assert failed == [1]  # the one nobody waited for, in the second batch


async def test_a_result_whose_caller_stopped_waiting_is_handed_to_abandoned() -> None:
    send = Sender()
    send.go.clear()
    abandoned: list[tuple[int, int]] = []
    batcher: Batcher[int, int] = Batcher(send, most=10,
                                         abandoned=lambda item, r: abandoned.append((item, r)))
    kept, dropped = batcher(1), batcher(2)
    async with asyncio.timeout(WAIT):
        while not send.batches:
            await asyncio.sleep(0)
    dropped.cancel()
    send.go.set()
    async with asyncio.timeout(WAIT):
        assert await kept == 10
        await batcher.drained()
    assert abandoned == [(2, 20)]


async def test_yield_first_lets_items_of_the_next_turn_join_the_first_batch() -> None:
    async def added_over_two_turns(yield_first: bool) -> list[list[int]]:
        send = Sender()
        batcher: Batcher[int, int] = Batcher(send, most=10, yield_first=yield_first)
        first = batcher(1)
        await asyncio.sleep(0)  # a turn of the loop: the batcher's task starts
        second = batcher(2)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(first, second)
        return send.batches

    assert await added_over_two_turns(False) == [[1], [2]]
    assert await added_over_two_turns(True) == [[1, 2]]


async def test_items_nobody_waits_for_linger_for_more() -> None:
    send = Sender()
    batcher: Batcher[int, int] = Batcher(send, most=10, linger=0.05)
    batcher.later(1)
    await asyncio.sleep(0)  # the batcher's task starts, and lingers
    batcher.later(2)
    async with asyncio.timeout(WAIT):
        await batcher.drained()
    assert send.batches == [[1, 2]]


async def test_a_cancelled_batcher_refuses_the_items_still_waiting() -> None:
    send = Sender()
    send.go.clear()
    batcher: Batcher[int, int] = Batcher(send, most=1)
    futures = [batcher(1), batcher(2)]
    async with asyncio.timeout(WAIT):
        while not send.batches:
            await asyncio.sleep(0)
    task = batcher._task
    assert task is not None
    task.cancel()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(result, StorageUnavailableError) for result in results)


def test_a_handoff_gives_the_first_item_to_come_and_every_other_already_there() -> None:
    handoff: Handoff[int] = Handoff()
    assert handoff.take() == []
    assert handoff.next(0.01) is None
    handoff.put(1)
    handoff.put(2)
    assert handoff.take() == [1, 2]
    later = threading.Timer(0.05, lambda: [handoff.put(n) for n in (3, 4)])
    later.start()
    taken = handoff.take(WAIT)
    later.join()
    assert taken[0] == 3 and taken + handoff.take() == [3, 4]


def test_a_refused_row_is_found_among_many_and_the_others_are_written() -> None:
    written: list[list[int]] = []

    def write(part: list[int]) -> None:
        if 5 in part:
            raise ValueError("refused")
        written.append(list(part))

    lost = write_splitting(list(range(8)), write, lambda exc: isinstance(exc, ValueError))
    assert [(row, str(exc)) for row, exc in lost] == [(5, "refused")]
    assert written == [[0, 1, 2, 3], [4], [6, 7]]  # in order, halves of refused parts


def test_an_error_that_is_no_refusal_is_raised() -> None:
    def write(part: list[int]) -> None:
        raise OSError("the disk is full")

    with pytest.raises(OSError):
        write_splitting([1, 2], write, lambda exc: isinstance(exc, ValueError))


def test_a_batch_no_statement_holds_goes_in_halves_from_the_start() -> None:
    parts = Splitting(list(range(6)), fits=lambda part: len(part) <= 2)
    assert [list(part) for part in parts] == [[0], [1, 2], [3], [4, 5]]
    single = Splitting([1], fits=lambda part: False)
    assert [list(part) for part in single] == [[1]]  # one item is tried whatever it weighs
