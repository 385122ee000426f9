"""The commands of backend workflows: `worker` (the scheduler alone) and `jobs` (list, show,
cancel, retry, pause, resume)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from pathlib import Path
from typing import Any

import click

from gateway.cli.group import (
    Failed,
    config_option,
    database_option,
    load_or_exit,
    main,
    refuse_unready,
    settled,
    store_of,
    with_store,
)
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, dumps_pretty, escape
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Registry
from gateway.scheduler import Scheduler, with_jobs
from gateway.scheduler.listing import (
    key_text,
    key_use,
    label_of,
    params_text,
    scheduled_by,
    waits_text,
)
from gateway.scheduler.recurring import next_fire
from gateway.scheduler.replay import replay
from gateway.server.app import storage_types
from gateway.storage import JOB_STATUSES, Job, Storage, open_storage
from gateway.storage.contract import KeyUse
from gateway.storage.retention import run_log_limits


@main.command()
@config_option
@database_option
def worker(config: tuple[Path, ...], database: str | None) -> None:
    """Run the scheduler only: claim and run due jobs, recurring events and triggers.

    \b
    Example:
      gateway worker --config workflows.d --database postgresql://gateway@db/gateway
    SIGTERM (or Ctrl-C) stops claiming, lets running jobs finish within scheduler.grace,
    and gives the rest back.
    """
    registry = load_or_exit(config)
    settings = settled(registry, database=database)
    refuse_unready(settings)
    registry = dataclasses.replace(registry, settings=settings)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    asyncio.run(_work(registry))


async def _work(registry: Registry) -> None:
    storage = open_storage(registry.settings.database)
    storage.runs.configure(run_log_limits(registry.settings))
    await storage.open(storage_types(registry))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interpreter = with_jobs(Interpreter(registry, storage))
    scheduler = Scheduler(interpreter, storage)
    logging.getLogger("gateway.scheduler").info("worker %s started", scheduler.worker)
    try:
        # Every step `serve` runs: http_request and send_email need the process's services.
        async with interpreter.services.running(registry.settings):
            await scheduler.run(stop)
    finally:
        await storage.close()


@main.group()
def jobs() -> None:
    """Inspect and steer backend jobs: scheduled runs, recurring ticks, trigger runs.

    \b
    Example:
      gateway jobs list --status failed
      gateway jobs retry 1732406400000x123456789012345678
      gateway jobs pause nightly-cleanup
    """


def _in_store(config: tuple[Path, ...], database: str | None, work: Any) -> Any:
    registry, storage = store_of(config, database)
    return asyncio.run(with_store(storage, registry, lambda s: work(s, registry),
                                  sync_indexes=False))


def _line(job: Job, registry: Registry, waits: str = "") -> str:
    """One job: its workflow and label, who scheduled it, its parameters (cut short), its
    flow control keys and why it waits, every text escaped (a caller's value cannot start a
    line of its own)."""
    error = f"  {escape(job.error)}" if job.error and job.status != "done" else ""
    label, by, params = label_of(registry, job), scheduled_by(job), params_text(job)
    key = key_text(job)
    return (f"{job.id}  {job.due_at:%Y-%m-%d %H:%M:%S}  {job.status:<9} {job.source:<9} "
            f"attempt {job.attempt}  {escape(job.workflow)}"
            + (f" ({escape(label)})" if label else "") + (f"  by {escape(by)}" if by else "")
            + (f"  params {escape(params)}" if params else "")
            + (f"  keys {escape(key)}" if key else "")
            + (f"  waits ({escape(waits)})" if waits else "") + error)


def _as_dict(job: Job) -> dict[str, Any]:
    return {**dataclasses.asdict(job), "data": dict(job.data)}


@jobs.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None,
              help="Only jobs with this status.")
@click.option("--workflow", "-w", default=None, help="Only jobs of this workflow or event.")
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
@database_option
def jobs_list(status: str | None, workflow: str | None, limit: int, as_json: bool,
              config: tuple[Path, ...], database: str | None) -> None:
    """List jobs, latest due first, then each recurring event's next run.

    \b
    Example:
      gateway jobs list --status failed --workflow send-welcome
    """

    now = utc_now()

    async def work(storage: Storage,
                   registry: Registry) -> tuple[list[Job], KeyUse, list[str], Registry]:
        found = await storage.jobs.list_jobs(status=status, workflow=workflow, limit=limit)
        use = await key_use(storage.jobs, found, now)
        return found, use, await _recurring_lines(storage, registry, as_json), registry

    found, use, recurring, registry = _in_store(config, database, work)
    for job in found:
        waits = waits_text(job, use, now)
        click.echo(dumps({**_as_dict(job), "label": label_of(registry, job), "waits": waits})
                   if as_json else _line(job, registry, waits))
    for line in recurring:
        click.echo(line)


async def _recurring_lines(storage: Storage, registry: Registry, as_json: bool) -> list[str]:
    """Each global recurring event's next run: its pending tick, or the next it will get."""
    lines, now = [], utc_now()
    paused = set(await storage.jobs.paused())
    for event in registry.recurring.values():
        if event.per_record:
            continue
        last = await storage.jobs.last_tick(event.name)
        upcoming = last.due_at if last is not None and last.status == "pending" else (
            next_fire(event, max(now, last.due_at) if last else now))
        state = "paused" if event.name in paused or "*" in paused else "active"
        lines.append(dumps({"recurring_event": event.name, "next_run": upcoming,
                            "state": state}) if as_json else
                     f"recurring {event.name}: next run {upcoming:%Y-%m-%d %H:%M:%S} UTC"
                     + (" (paused)" if state == "paused" else ""))
    return lines


@jobs.command("show")
@click.argument("job_id")
@config_option
@database_option
def jobs_show(job_id: str, config: tuple[Path, ...], database: str | None) -> None:
    """Show one job: its workflow, status, attempts, error, last run, what it is given, and
    the steps earlier runs checkpointed (restored when it is retried).

    \b
    Example:
      gateway jobs show 1732406400000x123456789012345678
    """
    async def work(storage: Storage, registry: Registry) -> dict[str, Any] | None:
        found = await storage.jobs.get_job(job_id)
        if found is None:
            return None
        done = await storage.jobs.checkpoints(job_id)
        return {**_as_dict(found), "checkpoints": [
            {"step": c.place, "action": c.action, "id": c.step_id or None, "run_id": c.run_id,
             "at": c.at, "kept": c.kept} for c in done]}

    shown = _in_store(config, database, work)
    if shown is None:
        raise Failed(f"no job with id {escape(job_id)}")
    click.echo(dumps_pretty(shown))


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1)
@click.option("--workflow", "-w", default=None,
              help="Cancel every pending scheduled job of this API workflow (or custom event).")
@config_option
@database_option
def jobs_cancel(job_ids: tuple[str, ...], workflow: str | None, config: tuple[Path, ...],
                database: str | None) -> None:
    """Cancel pending jobs (a running job is not stopped): by id, or every scheduled job of
    one workflow (Bubble's "Cancel all scheduled API workflows").

    \b
    Example:
      gateway jobs cancel 1732406400000x123456789012345678
      gateway jobs cancel --workflow send-welcome
    """
    if (workflow is None) == (not job_ids):
        raise click.UsageError("give job ids or --workflow NAME (one of them)")
    if workflow is not None:
        _cancel_workflow(workflow, config, database)
        return
    count = _in_store(config, database, lambda s, r: s.jobs.cancel(list(job_ids), utc_now()))
    click.echo(f"cancelled {count} job(s)")
    if count < len(job_ids):
        raise Failed(f"{len(job_ids) - count} job(s) were not pending (or do not exist)")


def _cancel_workflow(workflow: str, config: tuple[Path, ...], database: str | None) -> None:
    async def work(storage: Storage, registry: Registry) -> tuple[int, bool]:
        known = workflow in registry.workflows or workflow in registry.events
        return await storage.jobs.cancel_workflow(workflow, utc_now()), known

    count, known = _in_store(config, database, work)
    click.echo(f"cancelled {count} job(s) of {escape(workflow)}")
    if not count and not known:  # a typo, most likely: jobs of a removed workflow still go
        raise Failed(f"no API workflow or custom event is named {escape(workflow)} in the "
                     "config, and no job of that name was pending")


@jobs.command("retry")
@click.argument("job_id")
@click.option("--from-step", type=click.IntRange(min=1, max=10_000), default=None, metavar="N",
              help="Run steps N and later again, even those an earlier run did (1: the "
                   "whole workflow). Without it the job resumes: the steps that called out "
                   "or sent mail and succeeded are restored, not done again.")
@config_option
@database_option
def jobs_retry(job_id: str, from_step: int | None, config: tuple[Path, ...],
               database: str | None) -> None:
    """Replay a failed (or cancelled) job now, its attempts counted anew. It resumes: the
    outbound steps (http_request, send_email) an earlier run did are restored from their
    checkpoints, the others run again.

    \b
    Example:
      gateway jobs retry 1732406400000x123456789012345678
      gateway jobs retry 1732406400000x123456789012345678 --from-step 1
    """
    if not _in_store(config, database,
                     lambda s, r: replay(s.jobs, job_id, utc_now(), from_step)):
        raise Failed(f"no failed or cancelled job with id {escape(job_id)} (or another job "
                     "holds its singleton or debounce key)")
    click.echo(f"job {job_id} is pending again" + (
        "" if from_step is None else f", from step {from_step}"))


@jobs.command("pause")
@click.argument("workflow", required=False)
@config_option
@database_option
def jobs_pause(workflow: str | None, config: tuple[Path, ...], database: str | None) -> None:
    """Stop claiming jobs: of one workflow (or recurring event, or trigger), or all of them.
    Running jobs finish; nothing is lost.

    \b
    Example:
      gateway jobs pause send-welcome
      gateway jobs pause
    """
    _in_store(config, database, lambda s, r: s.jobs.pause(workflow, utc_now()))
    click.echo(f"paused {workflow or 'every workflow'}")


@jobs.command("resume")
@click.argument("workflow", required=False)
@config_option
@database_option
def jobs_resume(workflow: str | None, config: tuple[Path, ...], database: str | None) -> None:
    """Claim the jobs of a paused workflow again (or, with no name, of everything).

    \b
    Example:
      gateway jobs resume send-welcome
    """
    _in_store(config, database, lambda s, r: s.jobs.resume(workflow))
    click.echo(f"resumed {workflow or 'everything'}")
