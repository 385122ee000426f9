"""The commands that check, serve and run workflows: validate, serve, run, routes, detect,
schema."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging.config
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import uvicorn

from gateway.accounts import fold_email
from gateway.app import CONFIG_ENV, SCHEDULER_ENV
from gateway.auth import admitted
from gateway.cli.base import (
    DEFAULT_CONFIG,
    Failed,
    config_option,
    database_option,
    load_or_exit,
    main,
    refuse_missing_secrets,
    refuse_unusable_secrets,
    settled,
    with_store,
)
from gateway.coercion import gather
from gateway.config import schema
from gateway.config.diagnostics import render_json, render_text
from gateway.context import ADMIN, ANONYMOUS, Identity
from gateway.core.clock import utc_now
from gateway.core.encoding import loads_exact
from gateway.core.errors import GatewayError
from gateway.core.logformat import ENV as LOG_FORMAT_ENV
from gateway.core.logformat import log_config
from gateway.detect import as_yaml
from gateway.envelope import render_result
from gateway.interpreter import Interpreter, RunResult
from gateway.loader import check, discover, errors
from gateway.model import ROUTE_PREFIX, Registry
from gateway.reload import RELOAD_ENV
from gateway.scheduler import with_jobs
from gateway.scheduler.recurring import next_fire
from gateway.server import (
    BODY_TIMEOUT_ENV,
    FIRST_BYTE_TIMEOUT_ENV,
    HEADER_TIMEOUT_ENV,
    PER_ADDRESS_ENV,
    TRUSTED_PROXIES_ENV,
    BoundedHttpToolsProtocol,
)
from gateway.storage import Storage, open_storage


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="gcc-style lines for people, JSON for machines.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also print each recurring event's next three fire times.")
def validate(paths: tuple[Path, ...], fmt: str, verbose: bool) -> None:
    """Check workflow files; report every problem, located to the line and column.

    \b
    Example:
      gateway validate workflows.d/ --format json
    Exits 0 when there is no error (warnings are printed), 1 when there is one, 2 on a
    usage error.
    """
    targets = list(paths) or [DEFAULT_CONFIG]
    files, _ = discover(targets)
    registry, problems = check(targets, codegen=False)
    click.echo(render_json(problems, len(files)) if fmt == "json" else render_text(problems))
    if errors(problems):
        raise Failed("")
    if verbose and registry is not None:
        for line in fire_times(registry, utc_now()):
            click.echo(line, err=fmt == "json")


def fire_times(registry: Registry, now: datetime, count: int = 3) -> list[str]:
    """`name (schedule): the next `count` fire times`, for each global recurring event."""
    lines = []
    for event in sorted(registry.recurring.values(), key=lambda e: e.name):
        if event.per_record:
            lines.append(f"recurring {event.name}: per {event.type}, set by set_recurring_event")
            continue
        times, at = [], now
        for _ in range(count):
            at = next_fire(event, at)
            times.append(f"{at.astimezone(ZoneInfo(event.timezone)):%Y-%m-%d %H:%M %Z}")
        schedule = f"cron '{event.cron}' {event.timezone}" if event.cron else f"every {event.every}"
        lines.append(f"recurring {event.name} ({schedule}): next {', '.join(times)}")
    return lines


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default 1).")
@database_option
@click.option("--no-scheduler", is_flag=True,
              help="Do not run scheduled jobs here (leave them to `gateway worker`).")
@click.option("--reload", "reload_", is_flag=True,
              help="Reload the config when its files change (SIGHUP always reloads).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line, a line per request.")
def serve(config: tuple[Path, ...], host: str | None, port: int | None, workers: int | None,
          database: str | None, no_scheduler: bool, reload_: bool, log_format: str) -> None:
    """Serve the workflows over HTTP (refuses to start on an invalid config), and run the
    scheduler in the same process unless --no-scheduler.

    \b
    Example:
      gateway serve --config workflows.d --port 8000 --workers 2
      gateway serve --reload --log-format json
    A reload (SIGHUP, or a file changed with --reload) swaps a valid config in without
    failing a request, and refuses an invalid one, which the log shows located.
    """
    paths = list(config) or [DEFAULT_CONFIG]
    registry = load_or_exit(paths)
    settings = settled(registry, host=host, port=port, workers=workers, database=database)
    refuse_missing_secrets(settings)
    refuse_unusable_secrets(registry, settings)
    if settings.workers > 1 and settings.database.startswith("sqlite:"):
        raise Failed(f"error: {settings.workers} workers cannot share a SQLite database (they "
                     "would block each other's writes); use PostgreSQL "
                     "(--database postgresql://...) for more than one worker, or --workers 1")
    logging.config.dictConfig(log_config(log_format))
    os.environ[LOG_FORMAT_ENV] = log_format
    os.environ[RELOAD_ENV] = "1" if reload_ else "0"
    os.environ[CONFIG_ENV] = os.pathsep.join(str(p.resolve()) for p in paths)
    os.environ["GATEWAY_DATABASE_URL"] = settings.database
    os.environ[SCHEDULER_ENV] = "off" if no_scheduler else "on"
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout.total_seconds())
    os.environ[BODY_TIMEOUT_ENV] = str(settings.body_timeout.total_seconds())
    os.environ[FIRST_BYTE_TIMEOUT_ENV] = str(settings.first_byte_timeout.total_seconds())
    os.environ[PER_ADDRESS_ENV] = str(settings.max_connections_per_address)
    os.environ[TRUSTED_PROXIES_ENV] = ",".join(settings.trusted_proxies)
    uvicorn.run("gateway.app:app_from_environment", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop",
                http=BoundedHttpToolsProtocol,
                h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_connections,
                # forwarded headers are read by the app, from `server.trusted_proxies` only
                log_level="info", access_log=False, proxy_headers=False,
                log_config=log_config(log_format))


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    items = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param takes KEY=VALUE, not {pair!r}")
        items.append((key, value))
    return gather(items)


@main.command()
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter (repeat a key for a list; JSON text for objects).")
@click.option("--as", "as_", default="admin", show_default=True, metavar="EMAIL|admin|anonymous",
              help="Who the run acts for: a user (by e-mail), an admin, or nobody.")
@config_option
@database_option
def run(name: str, pairs: tuple[str, ...], as_: str, config: tuple[Path, ...],
        database: str | None) -> None:
    """Run one workflow without an HTTP server and print its response.

    \b
    Example:
      gateway run contact-form -p name=Ada -p email=ada@example.com
      gateway run my-leads --as ada@example.com
    Exits 0 when the run succeeds, 1 when it fails.
    """
    registry = load_or_exit(config)
    workflow = registry.workflows.get(name)
    if workflow is None:
        raise click.UsageError(f"no workflow named {name!r}")
    settings = settled(registry, database=database)
    refuse_missing_secrets(settings)
    registry = dataclasses.replace(registry, settings=settings)
    result = asyncio.run(_run_once(registry, name, _parse_params(pairs), as_))
    rendered = render_result(result)
    click.echo(f"HTTP {rendered.status}" + (f"  run {result.run_id}" if result.run_id else
                                            "  (refused before a run)"), err=True)
    click.echo(rendered.text())
    if rendered.status >= 400:
        raise Failed("")


async def _run_once(registry: Registry, name: str, params: dict[str, Any],
                    as_: str) -> RunResult:
    storage = open_storage(registry.settings.database)
    interpreter = with_jobs(Interpreter(registry, storage))

    async def work(store: Storage) -> RunResult:
        workflow = registry.workflows[name]
        try:
            identity = admitted(workflow, await _identity(store, as_))
        except GatewayError as exc:  # refused as the HTTP endpoint would refuse it
            return RunResult("", error=exc)
        return await interpreter.run(workflow, params, source="cli", identity=identity)

    async with interpreter.services.running(registry.settings):  # http_request, send_email
        return await with_store(storage, registry, work)


async def _identity(storage: Storage, as_: str) -> Identity:
    if as_ == "admin":
        return ADMIN
    if as_ == "anonymous":
        return ANONYMOUS
    found = await storage.users.credential(fold_email(as_))
    user = await storage.records.get("user", found[0]) if found else None
    if user is None:
        raise click.BadParameter(f"no user with the e-mail {as_!r}", param_hint="--as")
    return Identity("user", user["_id"], user=user)


@main.command()
@config_option
def routes(config: tuple[Path, ...]) -> None:
    """List the HTTP routes the workflows compile to.

    \b
    Example:
      gateway routes --config workflows.d
    """
    registry = load_or_exit(config)
    for wf in registry.exposed():
        click.echo(f"{wf.method:<6} {ROUTE_PREFIX}/{wf.name:<32} auth={wf.auth:<6} {wf.location}")


@main.command()
@click.argument("sample", type=click.File("rb"))
def detect(sample: Any) -> None:
    """Print the parameters detected from SAMPLE (a JSON object; - for standard input), as
    YAML to paste under a workflow's params:, as POST .../<name>/initialize does."""
    try:
        data = loads_exact(sample.read())  # as a request's body is read
    except ValueError as exc:
        raise Failed(f"error: {sample.name} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Failed(f"error: {sample.name} must hold a JSON object of parameter values")
    click.echo(as_yaml(data), nl=False)


@main.command("schema")
def print_schema() -> None:
    """Print the JSON Schema of the YAML files (for editors' YAML language servers).

    \b
    Example:
      gateway schema > gateway.schema.json
    """
    click.echo(json.dumps(schema.schema_document(), indent=2))


