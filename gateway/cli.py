"""The `gateway` command. The only module that prints or exits.

Exit codes: 0 ok, 1 a validation or runtime failure, 2 a usage error (click's own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import uvicorn

from gateway import schema
from gateway.app import CONFIG_ENV, storage_types
from gateway.clock import utc_now
from gateway.coercion import gather
from gateway.context import ADMIN
from gateway.diagnostics import render_json, render_text
from gateway.encoding import dumps, dumps_pretty
from gateway.envelope import render_result
from gateway.errors import ConfigError, GatewayError
from gateway.interpreter import Interpreter, RunResult
from gateway.loader import check, discover, load
from gateway.model import ROUTE_PREFIX, Registry
from gateway.server import HEADER_TIMEOUT_ENV, BoundedHttpToolsProtocol
from gateway.settings import Settings, parse_duration, with_environment, with_flags
from gateway.storage import Storage, open_storage

DEFAULT_CONFIG = Path("workflows.d")
T = TypeVar("T")

config_option = click.option(
    "--config", "config", type=click.Path(path_type=Path), multiple=True,
    help="A folder or file of YAML workflows (repeatable; default: workflows.d).")
database_option = click.option(
    "--database", envvar="GATEWAY_DATABASE_URL", default=None,
    help="sqlite:///FILE or postgresql://... (default: the settings, then sqlite:///gateway.db).")


class Failed(click.ClickException):
    """A command that ran and failed: exit code 1, with its message (if any) on stderr."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        if self.message:
            click.echo(self.message, err=True)


class _Group(click.Group):
    """Renders the gateway's own errors at one boundary: no traceback, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise Failed(render_text(exc.diagnostics)) from exc
        except GatewayError as exc:
            raise Failed(f"error: {exc.message}") from exc


def _load_or_exit(paths: Sequence[Path]) -> Registry:
    return load(list(paths) or [DEFAULT_CONFIG])


def _settled(registry: Registry, **flags: Any) -> Settings:
    return with_flags(with_environment(registry.settings), **flags)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="workflow-gateway")
def main() -> None:
    """The workflow gateway: YAML workflows validated, compiled and served as HTTP endpoints."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="gcc-style lines for people, JSON for machines.")
def validate(paths: tuple[Path, ...], fmt: str) -> None:
    """Check workflow files; report every problem, located to the line and column.

    \b
    Example:
      gateway validate workflows.d/ --format json
    Exits 0 when clean, 1 when there are problems, 2 on a usage error.
    """
    targets = list(paths) or [DEFAULT_CONFIG]
    files, _ = discover(targets)
    _, problems = check(targets, codegen=False)
    click.echo(render_json(problems, len(files)) if fmt == "json" else render_text(problems))
    if problems:
        raise Failed("")


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default 1).")
@database_option
def serve(config: tuple[Path, ...], host: str | None, port: int | None, workers: int | None,
          database: str | None) -> None:
    """Serve the workflows over HTTP (refuses to start on an invalid config).

    \b
    Example:
      gateway serve --config workflows.d --port 8000 --workers 2
    """
    paths = list(config) or [DEFAULT_CONFIG]
    registry = _load_or_exit(paths)
    settings = _settled(registry, host=host, port=port, workers=workers, database=database)
    _refuse_missing_secrets(settings)
    if settings.workers > 1 and settings.database.startswith("sqlite:"):
        raise Failed(f"error: {settings.workers} workers cannot share a SQLite database (they "
                     "would block each other's writes); use PostgreSQL "
                     "(--database postgresql://...) for more than one worker, or --workers 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    os.environ[CONFIG_ENV] = os.pathsep.join(str(p.resolve()) for p in paths)
    os.environ["GATEWAY_DATABASE_URL"] = settings.database
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout.total_seconds())
    uvicorn.run("gateway.app:app_from_environment", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop",
                http=BoundedHttpToolsProtocol,
                h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_connections,
                log_level="info", access_log=False, proxy_headers=False)


def _refuse_missing_secrets(settings: Settings) -> None:
    missing = settings.missing_secrets()
    if missing:
        raise Failed("error: the settings declare secrets the environment does not set: "
                     + ", ".join(missing))


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
@config_option
@database_option
def run(name: str, pairs: tuple[str, ...], config: tuple[Path, ...],
        database: str | None) -> None:
    """Run one workflow without an HTTP server and print its response.

    \b
    Example:
      gateway run contact-form -p name=Ada -p email=ada@example.com
    Exits 0 when the run succeeds, 1 when it fails.
    """
    registry = _load_or_exit(config)
    workflow = registry.workflows.get(name)
    if workflow is None:
        raise click.UsageError(f"no workflow named {name!r}")
    settings = _settled(registry, database=database)
    _refuse_missing_secrets(settings)
    registry = dataclasses.replace(registry, settings=settings)
    result = asyncio.run(_run_once(registry, name, _parse_params(pairs)))
    rendered = render_result(result)
    click.echo(f"HTTP {rendered.status}  run {result.run_id}", err=True)
    click.echo(rendered.text())
    if rendered.status >= 400:
        raise Failed("")


async def _run_once(registry: Registry, name: str, params: dict[str, Any]) -> RunResult:
    storage = open_storage(registry.settings.database)
    interpreter = Interpreter(registry, storage)
    return await _with_store(storage, registry, lambda s: interpreter.run(
        registry.workflows[name], params, source="cli", identity=ADMIN))


@main.command()
@config_option
def routes(config: tuple[Path, ...]) -> None:
    """List the HTTP routes the workflows compile to.

    \b
    Example:
      gateway routes --config workflows.d
    """
    registry = _load_or_exit(config)
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


def _store_of(config: tuple[Path, ...], database: str | None) -> tuple[Registry, Storage]:
    registry = _load_or_exit(config)
    settings = _settled(registry, database=database)
    return registry, open_storage(settings.database)


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
@click.option("--since", default=None, metavar="DURATION",
              help="Only runs started within this long (e.g. 30m, 1h, 7d).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
@database_option
def runs_list(workflow: str | None, status: str | None, since: str | None, limit: int,
              as_json: bool, config: tuple[Path, ...], database: str | None) -> None:
    """List recent runs, newest first.

    \b
    Example:
      gateway runs list --workflow create-lead --status failed --since 1h
    """
    try:
        cutoff = utc_now() - parse_duration(since) if since else None
    except (ValueError, OverflowError) as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    registry, storage = _store_of(config, database)
    found = asyncio.run(_with_store(storage, registry, lambda s: s.runs.list_runs(
        workflow=workflow, status=status, since=cutoff, limit=limit), sync_indexes=False))
    for item in found:
        if as_json:
            click.echo(dumps(item))
            continue
        error = item.get("error") or {}
        click.echo(f"{item['id']}  {item['started_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{item['status']:<8} {item['duration_ms']:>9.2f} ms  {item['workflow']}"
                   + (f"  {error.get('code')}: {error.get('message')}" if error else ""))


@runs.command("show")
@click.argument("run_id")
@config_option
@database_option
def runs_show(run_id: str, config: tuple[Path, ...], database: str | None) -> None:
    """Show one run: parameters (secrets redacted), result, error and every step.

    \b
    Example:
      gateway runs show 1732406400000x123456789012345678
    """
    registry, storage = _store_of(config, database)
    found = asyncio.run(_with_store(storage, registry, lambda s: s.runs.get_run(run_id),
                                    sync_indexes=False))
    if found is None:
        raise Failed(f"no run with id {run_id}")
    click.echo(dumps_pretty(found))


@main.group()
def db() -> None:
    """Manage the built-in database.

    \b
    Example:
      gateway db upgrade --database postgresql://gateway@db.internal/gateway
    """


@db.command("upgrade")
@config_option
@database_option
def db_upgrade(config: tuple[Path, ...], database: str | None) -> None:
    """Apply pending schema migrations (the server also applies them at start).

    \b
    Example:
      gateway db upgrade --database postgresql://gateway@db.internal/gateway
    """
    registry, storage = _store_of(config, database)
    applied = asyncio.run(_with_store(storage, registry, _migrations_applied))
    click.echo("\n".join(f"applied {name}" for name in applied) or "already up to date")


async def _migrations_applied(storage: Storage) -> list[str]:
    return [*storage.migrations_applied, *await storage.migrate()]


async def _with_store(storage: Storage, registry: Registry,
                      work: Callable[[Storage], Awaitable[T]], *, sync_indexes: bool = True) -> T:
    await storage.open(storage_types(registry), sync_indexes=sync_indexes)
    try:
        return await work(storage)
    finally:
        await storage.close()
