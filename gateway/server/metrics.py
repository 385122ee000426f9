"""Prometheus metrics, counted without a lock or a formatted string per request.

Runs are counted per workflow in plain objects bound when a registry is built (the event loop
is the only writer), and turned into metric families only when `/metrics` is read, through a
`prometheus_client` collector. Counts survive a config reload: a workflow keeps its counters,
one that goes away keeps them until the process ends (Prometheus counters never go down).

Each worker process counts its own runs: with `--workers` above 1, a scrape reaches one
worker (run one instance per worker port, or a single worker, when the totals matter).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("success", "failed", "not_run", "rejected")
# Upper bounds of the run duration histogram, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 300.0)
# What the scheduler reports when it exists: jobs by status, and how late the oldest due job
# is (seconds). Called on the event loop when `/metrics` is read: figures it keeps, no query.
JobsProbe = Callable[[], tuple[dict[str, int], float | None]]
# Flow control: jobs it kept from being written, by (workflow, `singleton` or `debounce`),
# and due jobs waiting for their keys, by workflow (None: not known here).
FlowProbe = Callable[[], tuple[Mapping[tuple[str, str], int], Mapping[str, int] | None]]
# What tracing reports while it is on: spans sent, and spans dropped by why (`queue_full`,
# `export_failed`); None while it is off.
SpansProbe = Callable[[], tuple[int, dict[str, int]] | None]


class WorkflowCounts:
    """One workflow's runs by status and their duration histogram."""

    __slots__ = ("buckets", "runs", "total")

    def __init__(self) -> None:
        self.runs = dict.fromkeys(STATUSES, 0)
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0  # seconds

    def observe(self, status: str, milliseconds: float) -> None:
        seconds = milliseconds / 1000
        self.runs[status] += 1  # one of STATUSES, every key made up front
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class Metrics:
    """Every count of one process, and the collector that shows them."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowCounts] = {}
        self.http = [0] * 6  # responses by status class: index 1 to 5 (1xx to 5xx)
        self.queue_depth: Callable[[], int] | None = None
        self.jobs: JobsProbe | None = None  # set by the scheduler, once it exists
        self.spans: SpansProbe | None = None  # set when tracing is on
        self.flow: FlowProbe | None = None  # set by the app
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def bind(self, names: Iterable[str]) -> None:
        """Counters for each workflow of a new registry, made before any request needs one."""
        for name in names:
            self.workflows.setdefault(name, WorkflowCounts())

    def observe(self, run_id: str, workflow: str, status: str, milliseconds: float) -> None:
        counts = self.workflows.get(workflow)
        if counts is None:  # a custom event run on its own, or a workflow of a later config
            counts = self.workflows[workflow] = WorkflowCounts()
        counts.observe(status, milliseconds)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        runs = CounterMetricFamily("gateway_runs", "Runs by workflow and status.",
                                   labels=["workflow", "status"])
        durations = HistogramMetricFamily("gateway_run_duration_seconds",
                                          "Run duration by workflow.", labels=["workflow"])
        for name, counts in sorted(m.workflows.items()):
            for status, count in counts.runs.items():
                runs.add_metric([name, status], count)
            durations.add_metric([name], _cumulative(counts.buckets), counts.total)
        yield runs
        yield durations
        http = CounterMetricFamily("gateway_http_responses", "HTTP responses by status class.",
                                   labels=["class"])
        for index in range(1, 6):
            http.add_metric([f"{index}xx"], m.http[index])
        yield http
        if m.queue_depth is not None:
            yield GaugeMetricFamily("gateway_run_log_queue_depth",
                                    "Runs waiting to be written to the run log.",
                                    value=m.queue_depth())
        if m.jobs is not None:
            yield from _jobs(m.jobs)
        if m.flow is not None:
            yield from _flow(m.flow)
        spans = m.spans() if m.spans is not None else None
        if spans is not None:
            yield from _spans(*spans)


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*map(str, BUCKETS), "+Inf"], buckets, strict=True):
        running += count
        found.append((bound, running))
    return found


def _jobs(probe: JobsProbe) -> Iterator[Metric]:
    by_status, lag = probe()
    jobs = GaugeMetricFamily("gateway_jobs", "Jobs by status.", labels=["status"])
    for status, count in sorted(by_status.items()):
        jobs.add_metric([status], count)
    yield jobs
    if lag is not None:
        yield GaugeMetricFamily("gateway_jobs_due_lag_seconds",
                                "How late the oldest due job is to start.", value=lag)


def _flow(probe: FlowProbe) -> Iterator[Metric]:
    skipped, waiting = probe()
    kept = CounterMetricFamily("gateway_jobs_flow_skipped",
                               "Jobs flow control kept from being written: skipped by a "
                               "singleton key, or debounced into the job waiting with its "
                               "key.", labels=["workflow", "reason"])
    for (workflow, reason), count in sorted(skipped.items()):
        kept.add_metric([workflow, reason], count)
    yield kept
    if waiting is not None:
        waits = GaugeMetricFamily("gateway_jobs_flow_waiting",
                                  "Jobs waiting for their concurrency or throttle key.",
                                  labels=["workflow"])
        for workflow, count in sorted(waiting.items()):
            waits.add_metric([workflow], count)
        yield waits


def _spans(exported: int, dropped: dict[str, int]) -> Iterator[Metric]:
    yield CounterMetricFamily("gateway_trace_spans_exported",
                              "Spans the collector took.", value=exported)
    lost = CounterMetricFamily("gateway_trace_spans_dropped",
                               "Spans dropped: the export queue was full, or the collector "
                               "refused or missed them.", labels=["reason"])
    for reason, count in sorted(dropped.items()):
        lost.add_metric([reason], count)
    yield lost


Handler = Callable[..., Awaitable[Any]]


def counting(handler: Handler, counts: list[int]) -> Handler:
    """`handler` (an endpoint or an exception handler answering a response), counting its
    responses by status class into `counts`: one call, no lock, no string."""

    async def counted(*args: Any) -> Any:
        response = await handler(*args)
        counts[min(response.status_code // 100, 5)] += 1
        return response

    return counted
