"""`gateway runs`: the run log, listed and shown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from gateway.cli.group import Failed, config_option, database_option, main, store_of, with_store
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, dumps_pretty, escape
from gateway.core.settings import parse_duration
from gateway.tracing import trace_id_of, trace_link

MAX_LISTED = 10_000  # runs one `runs list` prints at most
MAX_TEXT = 1_000  # characters of a `--text` search


@main.group()
def runs() -> None:
    """Inspect the run log: every run, its status, steps and reasons.

    \b
    Example:
      gateway runs list --status failed --since 1h
      gateway runs show 1732406400000x123456789012345678
    """


@runs.command("list")
@click.option("--workflow", "-w", default=None, help="Only runs of this workflow.")
@click.option("--status", type=click.Choice(["success", "failed", "not_run", "rejected"]),
              default=None, help="Only runs with this status.")
@click.option("--source", default=None, metavar="SOURCE",
              help="Only runs started this way (http, cli, and later scheduler or trigger).")
@click.option("--since", default=None, metavar="WHEN",
              help="Only runs started within this long (30m, 1h, 7d) or since this date.")
@click.option("--until", default=None, metavar="WHEN",
              help="Only runs started before this long ago (1h) or this date.")
@click.option("--text", default=None, metavar="TEXT",
              help="Only runs whose parameters, result, error or steps contain TEXT "
                   "(ASCII case ignored).")
@click.option("--user", default=None, metavar="ID|EMAIL",
              help="Only runs a user called: the user's id or e-mail.")
@click.option("--limit", type=click.IntRange(min=1, max=MAX_LISTED), default=50,
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
@database_option
def runs_list(workflow: str | None, status: str | None, source: str | None, since: str | None,
              until: str | None, text: str | None, user: str | None, limit: int,
              as_json: bool, config: tuple[Path, ...], database: str | None) -> None:
    """List recent runs, newest first.

    \b
    Example:
      gateway runs list --workflow create-lead --status failed --since 1h
      gateway runs list --source http --since 2024-05-01 --until 2024-05-02 --text ada@
      gateway runs list --user ada@example.com
    """
    now = utc_now()
    start, end = _moment(since, now, "--since"), _moment(until, now, "--until")
    if text is not None and (not text or len(text) > MAX_TEXT or not text.isprintable()):
        raise click.BadParameter(f"1 to {MAX_TEXT} printable characters", param_hint="--text")
    if user is not None and (not user or len(user) > MAX_TEXT or not user.isprintable()):
        raise click.BadParameter(f"1 to {MAX_TEXT} printable characters", param_hint="--user")
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry, lambda s: s.runs.list_runs(
        workflow=workflow, status=status, since=start, limit=limit, source=source, until=end,
        text=text, user=user), sync_indexes=False))
    for item in found:
        if as_json:
            click.echo(dumps(item))
            continue
        error = item.get("error") or {}
        shown = registry.workflows.get(item["workflow"])
        label = f" ({escape(shown.label)})" if shown is not None and shown.label else ""
        identity = item.get("identity") or {}
        caller = identity.get("email") or identity.get("user_id")
        by = f"  by {escape(str(caller))}" if caller else ""
        click.echo(f"{item['id']}  {item['started_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{item['status']:<8} {item['duration_ms']:>9.2f} ms  "
                   f"{escape(str(item.get('source', ''))):<5} {escape(item['workflow'])}{label}"
                   f"{by}"
                   + (f"  {escape(str(error.get('code')))}: {escape(str(error.get('message')))}"
                      if error else ""))


def _moment(text: str | None, now: datetime, hint: str) -> datetime | None:
    """`30m`, `1h`, `7d` ago, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except (ValueError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is neither a duration (30m, 1h, 7d) nor an ISO "
                                 "8601 date", param_hint=hint) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@config_option
@database_option
def runs_show(run_id: str, as_json: bool, config: tuple[Path, ...],
              database: str | None) -> None:
    """Show one run: parameters (secrets redacted), result, error, and its steps as a
    timeline.

    \b
    Example:
      gateway runs show 1732406400000x123456789012345678
      gateway runs show 1732406400000x123456789012345678 --json
    """
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry, lambda s: s.runs.get_run(run_id),
                                    sync_indexes=False))
    if found is None:
        raise Failed(f"no run with id {escape(run_id)}")
    click.echo(dumps_pretty(found) if as_json else "\n".join(
        timeline(found, registry.settings.tracing_ui_url)))


def timeline(run: dict[str, Any], ui_url: str | None = None) -> list[str]:
    """A run for people: a header, then each step at its offset from the start."""
    identity = run.get("identity") or {}
    who = identity.get("kind", "?") + (f" {identity['user_id']}" if identity.get("user_id")
                                       else "") + (f" <{identity['email']}>"
                                                   if identity.get("email") else "")
    lines = [f"run {run['id']}  {escape(run['workflow'])}  {run['status']}  "
             f"{run['duration_ms']:.2f} ms  ({escape(str(run.get('source')))}, {escape(who)})",
             f"started   {run['started_at']:%Y-%m-%d %H:%M:%S.%f} UTC",
             f"params    {escape(dumps(run.get('params')))}"]
    trace_id = trace_id_of(run)
    if trace_id is not None:
        link = trace_link(ui_url, trace_id)
        lines.insert(2, f"trace     {trace_id}" + (f"  {escape(link)}" if link else ""))
    if run.get("result") is not None:
        lines.append(f"result    {escape(dumps(run['result']))}")
    error = run.get("error")
    if error:
        where = f" (at {escape(error['location'])})" if error.get("location") else ""
        lines.append(f"error     {escape(str(error.get('code')))}: "
                     f"{escape(str(error.get('message')))}{where}")
    steps = run.get("steps") or []
    lines.append(f"steps     {len(steps)}")
    offset = 0.0
    for number, step in enumerate(steps, 1):
        took = float(step.get("duration_ms") or 0.0)
        name = escape(str(step.get("id") or "-"))
        lines.append(f"  {offset:>9.2f} ms  {number:>3}. {name:<16} "
                     f"{escape(str(step.get('action'))):<22} {step.get('status', '?'):<8}"
                     f"{took:>9.2f} ms")
        facts = {k: v for k, v in step.items()
                 if k not in ("id", "action", "status", "duration_ms")}
        for key, value in facts.items():
            shown = value if isinstance(value, str) else dumps(value)
            lines.append(f"{'':>19}{escape(key)}: {escape(shown)}")
        offset += took
    return lines
