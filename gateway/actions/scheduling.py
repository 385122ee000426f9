"""Scheduling actions: `schedule_workflow` (of an API workflow or a custom event),
`schedule_workflow_on_list`, `cancel_scheduled`, `cancel_all_scheduled` and
`set_recurring_event`.

A scheduled job is not written when its step runs: it joins the run's `jobs`, which the
run's commit writes in one transaction with the jobs of its database triggers, and only
when the run succeeds (a failed run leaves no job behind). Its id is known at once, so a
later step can return it or cancel it.
"""

from __future__ import annotations

import asyncio
import calendar
import reprlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from gateway.core.encoding import iso
from gateway.core.errors import InvalidDataError, RunError, did_you_mean, shown
from gateway.core.ids import new_id
from gateway.core.settings import parse_duration
from gateway.runtime.action_spec import Action, StepCheck, check_call_params
from gateway.runtime.coercion import convert_value
from gateway.runtime.coercion import record_id as coerce_record_id
from gateway.runtime.context import RunContext
from gateway.storage.contract import Job, JobStore

FREQUENCIES = ("daily", "weekly", "monthly", "quarterly", "yearly", "none")
_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def _shown(value: Any) -> str:
    """A caller's value in a message: short, quoted when text, control characters escaped."""
    return repr(shown(value)) if isinstance(value, str) else shown(reprlib.repr(value))


def _jobs(ctx: RunContext) -> JobStore:
    if ctx.storage is None:
        raise RunError("no database is configured for this run")
    return ctx.storage.jobs


def _date(value: Any, key: str) -> datetime:
    try:
        converted: datetime = convert_value(value, "date")
        return converted
    except ValueError as exc:
        raise InvalidDataError(f"{key} must be a date, not {_shown(value)}") from exc


def _duration(value: Any, key: str) -> timedelta:
    try:
        duration = value if isinstance(value, timedelta) else parse_duration(
            value if not isinstance(value, bool) else "")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidDataError(
            f"{key} must be a duration (e.g. 5m) or seconds, not {_shown(value)}") from exc
    if duration < timedelta(0):
        raise InvalidDataError(f"{key} must not be negative")
    return duration


def _due(ctx: RunContext, args: Mapping[str, Any]) -> datetime:
    """When the job is due: `at` (a past date means now) or now plus `delay`."""
    if args.get("at") is not None:
        return max(_date(args["at"], "at"), ctx.now)
    if args.get("delay") is not None:
        return ctx.now + _duration(args["delay"], "delay")
    return ctx.now


def _passed(value: Any) -> Any:
    """A parameter as a job keeps it: a record as its id."""
    if isinstance(value, dict) and "_id" in value and "_type" in value:
        return value["_id"]
    if isinstance(value, list):
        return [_passed(item) for item in value]
    return value


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidDataError(
            f"params must be a mapping of names to values, not {_shown(value)}")
    return {str(key): _passed(item) for key, item in value.items()}


def _depth(ctx: RunContext) -> int:
    depth = ctx.schedule_depth + 1
    if depth > ctx.settings.scheduler_max_depth:
        raise RunError(f"scheduled runs would nest deeper than {ctx.settings.scheduler_max_depth}"
                       " levels (scheduler.max_depth): a workflow that schedules itself?")
    return depth


def new_job(ctx: RunContext, workflow: str, due: datetime, params: dict[str, Any],
            **data: Any) -> Job:
    return Job(id=new_id(ctx.now), workflow=workflow, source="schedule", due_at=due,
               created_at=ctx.now, data={"params": params, "identity": ctx.identity.record,
                                         "depth": _depth(ctx), "by_run": ctx.run_id, **data})


def _target(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """What a schedule_workflow step runs, and what its job says of it: a custom event
    (`event`), and privacy rules ignored (the step's `ignore_privacy_rules`, which the
    loader allows only where the workflow's own would be)."""
    data: dict[str, Any] = {}
    if args.get("event") is not None:
        data["event"] = True
    if args.get("ignore_privacy_rules") is True:
        data["ignore_privacy_rules"] = True
    return str(args["event"] if "event" in data else args["workflow"]), data


async def schedule_workflow(ctx: RunContext, args: dict[str, Any]) -> Any:
    _jobs(ctx)
    name, data = _target(args)
    job = new_job(ctx, name, _due(ctx, args), _params(args.get("params")), **data)
    ctx.jobs.append(job)
    return {"id": job.id}


def _items(value: Any) -> list[Any]:
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        return list(value["results"])  # the result of a search step
    if isinstance(value, list):
        return value
    raise InvalidDataError(
        f"list must be a list (or a search result), not {type(value).__name__}")


async def schedule_on_list(ctx: RunContext, args: dict[str, Any]) -> Any:
    _jobs(ctx)
    items = _items(args["list"])
    most = ctx.settings.scheduler_max_list
    if len(items) > most:
        raise InvalidDataError(f"the list has {len(items)} items; at most {most} can be "
                               "scheduled at once (scheduler.max_list)")
    start = _due(ctx, args)
    interval = _duration(args["interval"], "interval") if args.get("interval") else timedelta(0)
    base = _params(args.get("params"))
    item_param, workflow = str(args["item_param"]), str(args["workflow"])
    jobs = []
    for index, item in enumerate(items):
        jobs.append(new_job(ctx, workflow, start + interval * index,
                            {**base, item_param: _passed(item)}))
        if index % 1000 == 999:
            await asyncio.sleep(0)  # 100,000 items must not hold the event loop
    ctx.jobs.extend(jobs)
    return {"ids": [job.id for job in jobs]}


def _job_id(value: Any) -> str:
    """A job's id, from the id or from the `{id}` a schedule_workflow step returned."""
    if isinstance(value, dict) and set(value) == {"id"}:
        value = value["id"]
    if not isinstance(value, str) or not value:
        raise InvalidDataError(f"job must be a job id, not {_shown(value)}")
    return value


def _job_ids(args: Mapping[str, Any]) -> list[str]:
    if "job" in args:
        return [_job_id(args["job"])]
    jobs = args.get("jobs")
    if isinstance(jobs, dict) and set(jobs) == {"ids"}:
        jobs = jobs["ids"]  # the result of a schedule_workflow_on_list step
    if not isinstance(jobs, list):
        raise InvalidDataError(f"jobs must be a list of job ids, not {_shown(jobs)}")
    return [_job_id(job) for job in jobs]


async def cancel_scheduled(ctx: RunContext, args: dict[str, Any]) -> Any:
    ids = _job_ids(args)
    wanted = set(ids)
    unwritten = [job for job in ctx.jobs if job.id in wanted]  # scheduled by this very run
    for job in unwritten:
        ctx.jobs.remove(job)
    cancelled = await _jobs(ctx).cancel(ids, ctx.now) if ids else 0
    return {"cancelled": cancelled + len(unwritten)}


async def cancel_all_scheduled(ctx: RunContext, args: dict[str, Any]) -> Any:
    """Bubble's "Cancel all scheduled API workflows" for one workflow (or custom event):
    its pending scheduled jobs (not recurring ticks, not trigger runs), and those this very
    run scheduled. A running job is not stopped."""
    name = str(args["event"] if args.get("event") is not None else args["workflow"])
    unwritten = [job for job in ctx.jobs if job.source == "schedule" and job.workflow == name]
    for job in unwritten:
        ctx.jobs.remove(job)
    return {"cancelled": len(unwritten) + await _jobs(ctx).cancel_workflow(name, ctx.now)}


def add_frequency(when: datetime, frequency: str) -> datetime:
    """`when` one period later; a month end stays within its month (31 Jan -> 28 Feb)."""
    if frequency == "daily":
        return when + timedelta(days=1)
    if frequency == "weekly":
        return when + timedelta(weeks=1)
    months = when.month - 1 + _MONTHS[frequency]
    year, month = when.year + months // 12, months % 12 + 1
    return when.replace(year=year, month=month,
                        day=min(when.day, calendar.monthrange(year, month)[1]))


def recurring_job(workflow: str, thing: str, frequency: str, due: datetime,
                  data: Mapping[str, Any], series: str | None = None) -> Job:
    """One tick of a per-record recurring event. Its key (the series, started by one
    `set_recurring_event`, and the due time) makes each tick exist once, however many
    workers finish the tick before it."""
    id = new_id(due)
    series = series or str(data.get("series") or id)
    return Job(id=id, workflow=workflow, source="recurring", due_at=due,
               unique_key=f"recurring:{workflow}:{thing}:{series}:{iso(due)}", subject=thing,
               data={**data, "thing": thing, "frequency": frequency, "series": series})


async def set_recurring_event(ctx: RunContext, args: dict[str, Any]) -> Any:
    frequency = str(args["frequency"])
    if frequency not in FREQUENCIES:
        raise InvalidDataError(f"frequency must be one of {', '.join(FREQUENCIES)}, "
                               f"not {_shown(frequency)}")
    try:
        thing = coerce_record_id(args["thing"])
    except ValueError as exc:
        raise InvalidDataError(
            f"thing must be a record or a record id, not {_shown(args['thing'])}") from exc
    event = str(args["event"])
    job = None
    if frequency != "none":
        start = max(_date(args["start"], "start"), ctx.now) if args.get("start") else ctx.now
        job = recurring_job(event, thing, frequency, start,
                            {"identity": ctx.identity.record, "depth": _depth(ctx)})
    # The record's series is replaced (or stopped) at once and its pending ticks cancelled:
    # a tick of it running now (this very run, it may be) is followed by none. The new
    # series' first tick is written at the commit.
    unwritten = [j for j in ctx.jobs if j.source == "recurring" and j.workflow == event
                 and j.subject == thing]  # a series this very run started
    for old in unwritten:
        ctx.jobs.remove(old)
    cancelled = len(unwritten) + await _jobs(ctx).set_series(
        event, thing, None if job is None else str(job.data["series"]), ctx.now)
    if job is None:
        return {"cancelled": cancelled}
    ctx.jobs.append(job)
    return {"id": job.id, "next": job.due_at}


def check_schedule(check: StepCheck, args: Mapping[str, Any]) -> None:
    """The workflow (or custom event) exists; the constant parameters it is given are its
    own and fit; the parameters it needs are given (the list's item counts as one)."""
    if "event" in args:
        if "workflow" in args:
            check.error(check.base + "/event", "schema.not",
                        "'workflow' and 'event' cannot both be given: schedule one of them")
            return
        event = args["event"]
        declared = check.event_params(event, check.base + "/event")
        if declared is not None:
            check_call_params(check, args, declared, f"custom event '{event}'",
                              ("ref.unknown-event-param", "ref.missing-event-param"))
        return
    if "workflow" not in args:
        check.error(check.base, "schema.required", "'workflow' or 'event' is required")
        return
    name = args["workflow"]
    declared_params = check.workflow_params(name, check.base + "/workflow")
    if declared_params is None:
        return
    item = args.get("item_param")
    if isinstance(item, str) and item not in {p.name for p in declared_params}:
        check.error(check.base + "/item_param", "ref.unknown-workflow-param",
                    f"workflow '{name}' has no parameter '{item}'"
                    + did_you_mean(item, {p.name: p for p in declared_params}))
    check_call_params(check, args, declared_params, f"workflow '{name}'",
                      ("ref.unknown-workflow-param", "ref.missing-workflow-param"),
                      item if isinstance(item, str) else None)


def check_cancel_all(check: StepCheck, args: Mapping[str, Any]) -> None:
    """One API workflow (or custom event), and one that exists."""
    if ("workflow" in args) == ("event" in args):
        check.error(check.base, "schema.required", "'workflow' or 'event' is required "
                    "(one of them)")
    elif "event" in args:
        check.event_params(args["event"], check.base + "/event")
    else:
        check.workflow_params(args["workflow"], check.base + "/workflow")


def check_cancel(check: StepCheck, args: Mapping[str, Any]) -> None:
    if "job" not in args and "jobs" not in args:
        check.error(check.base, "schema.required", "'job' or 'jobs' is required")


def old_cancel(step: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The keys of the form cancel_scheduled once took: `id` (the job) and `ids`."""
    if "ids" in step:
        yield "ids", "cancel_scheduled takes its list of job ids under `jobs`, not `ids`"
    elif "id" in step and "job" not in step and "jobs" not in step:
        yield "id", ("`id` names the step, as for every action: cancel_scheduled takes the "
                     "job to cancel under `job` (e.g. job: \"{{ steps.later.id }}\"), "
                     "and a list of jobs under `jobs`")


def check_recurring(check: StepCheck, args: Mapping[str, Any]) -> None:
    """The event is a per-record recurring event; a constant frequency is one we know."""
    check.recurring_type(args["event"], check.base + "/event")
    frequency = args.get("frequency")
    if isinstance(frequency, str) and "{" not in frequency and frequency not in FREQUENCIES:
        check.error(check.base + "/frequency", "value.bad-frequency",
                    f"'{frequency}' is not a frequency (one of {', '.join(FREQUENCIES)})")


ACTIONS = (
    Action("schedule_workflow", schedule_workflow, check=check_schedule, writes=True),
    Action("schedule_workflow_on_list", schedule_on_list, check=check_schedule, writes=True),
    Action("cancel_scheduled", cancel_scheduled, check=check_cancel, old_form=old_cancel),
    Action("cancel_all_scheduled", cancel_all_scheduled, check=check_cancel_all),
    Action("set_recurring_event", set_recurring_event, check=check_recurring, writes=True),
)
