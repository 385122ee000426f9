"""Backend workflows: durable jobs (scheduled runs, recurring ticks, database-trigger runs)
and the scheduler that claims and runs them, on one instance or many.

`with_jobs(interpreter)` makes runs that succeed write their jobs and trigger runs at
their commit; `Scheduler` runs them (`gateway serve` and `gateway worker`)."""

from __future__ import annotations

from gateway.scheduler.enqueue import Enqueuer, with_jobs
from gateway.scheduler.finish import backoff
from gateway.scheduler.worker import Scheduler

__all__ = ["Enqueuer", "Scheduler", "backoff", "with_jobs"]
