"""Ending jobs in batches: every job a worker ends while the previous batch is being
written goes into the next one, so that under load a worker spends one statement (and one
commit) on many jobs' ends rather than one each."""

from __future__ import annotations

import asyncio

from gateway.storage.contract import JobEnd, JobStore

BATCH = 500


class Finisher:
    """Writes `JobEnd`s for one worker, batched."""

    def __init__(self, jobs: JobStore, worker: str) -> None:
        self.jobs = jobs
        self.worker = worker
        self._waiting: list[tuple[JobEnd, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def end(self, end: JobEnd) -> bool:
        """Write how a job ended; False when it was no longer this worker's (its lease had
        expired and another worker took it)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((end, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        await asyncio.sleep(0)  # the jobs that end in this same turn of the loop join in
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            try:
                done = await self.jobs.finish_many(self.worker, [end for end, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each waiting job gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for end, future in batch:
                if not future.done():
                    future.set_result(end.id in done)
