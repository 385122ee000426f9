"""The commands over workflow files: validate, run, routes, detect, schema, test (workflow
tests, in CI) and openapi."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from gateway.api import openapi, swagger
from gateway.api.auth import admitted
from gateway.cli.group import (
    DEFAULT_CONFIG,
    Failed,
    config_option,
    database_option,
    load_or_exit,
    main,
    refuse_unready,
    settled,
    with_store,
)
from gateway.compiler.loader import check, config_version, discover, errors
from gateway.config import schema
from gateway.config.diagnostics import render_json, render_text
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps_pretty, escape
from gateway.core.errors import GatewayError
from gateway.runtime.accounts import fold_email
from gateway.runtime.coercion import gather
from gateway.runtime.context import ADMIN, ANONYMOUS, Identity
from gateway.runtime.envelope import render_result
from gateway.runtime.interpreter import Interpreter, RunResult
from gateway.runtime.model import ROUTE_PREFIX, Registry
from gateway.runtime.origin import Origin
from gateway.scheduler import with_jobs
from gateway.scheduler.recurring import next_fire
from gateway.server.workflow_tests import Outcome, failed, junit_xml, run_tests
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
    refuse_unready(settings)
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
        return await interpreter.run(workflow, params, origin=Origin("cli"), identity=identity)

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


@main.command("schema")
def print_schema() -> None:
    """Print the JSON Schema of the YAML files (for editors' YAML language servers).

    \b
    Example:
      gateway schema > gateway.schema.json
    """
    click.echo(json.dumps(schema.schema_document(), indent=2))


@main.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report to this file (for CI).")
@click.option("--verbose", "-v", is_flag=True, help="List the cases that pass too.")
def test_command(paths: tuple[Path, ...], junit: Path | None, verbose: bool) -> None:
    """Run the workflow tests (`kind: workflow_test`) in-process, each on a throwaway
    database; the workflows and the tests are read from PATHS together.

    \b
    Example:
      gateway test workflows.d/ --junit report.xml
    Exits 0 when every case passes, 1 when one fails (each failure located to its case's
    file:line, expected against got), 2 on a usage error.
    """
    registry = load_or_exit(list(paths) or [DEFAULT_CONFIG])
    registry = dataclasses.replace(registry, settings=settled(registry))
    if not registry.tests:
        raise Failed("error: no workflow_test documents in " +
                     ", ".join(str(p) for p in (paths or (DEFAULT_CONFIG,))))
    with tempfile.TemporaryDirectory(prefix="gateway-test-") as folder:
        outcomes = asyncio.run(run_tests(registry, Path(folder)))
    for outcome in outcomes:
        if verbose or not outcome.passed:
            click.echo(_line(outcome))
    bad = failed(outcomes)
    click.echo(f"{len(outcomes) - len(bad)} passed, {len(bad)} failed "
               f"({len(registry.tests)} test(s))")
    if junit is not None:
        junit.write_bytes(junit_xml(outcomes))
    if bad:
        raise Failed("")


def _line(outcome: Outcome) -> str:
    head = (f"{outcome.location}: {'PASS' if outcome.passed else 'FAIL'} "
            f"{escape(outcome.test)}: {escape(outcome.case)}")
    return "\n".join([head, *(f"    {escape(f)}" for f in outcome.failures)])


@main.command("openapi")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "form", type=click.Choice(["openapi3", "swagger2"]),
              default="openapi3", show_default=True,
              help="openapi3: OpenAPI 3.1, as served at /api/1.1/meta/openapi.json; swagger2: "
                   "Swagger 2.0 as Bubble writes it, as served at /api/1.1/meta/swagger.json.")
def openapi_command(paths: tuple[Path, ...], form: str) -> None:
    """Print the description of the exposed workflows and Data API types: OpenAPI 3.1 by
    default (the fuller one), or Swagger 2.0 for clients generated from Bubble's file.

    \b
    Example:
      gateway openapi workflows.d/ > openapi.json
      gateway openapi --format swagger2 workflows.d/ > swagger.json
    """
    targets = list(paths) or [DEFAULT_CONFIG]
    registry = load_or_exit(targets)
    files, _ = discover(targets)
    make = swagger.document if form == "swagger2" else openapi.document
    click.echo(dumps_pretty(make(registry, version=config_version(str(f) for f in files))))
