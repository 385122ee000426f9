"""The `gateway` command. The only module that prints or exits.

Exit codes: 0 ok, 1 a validation or runtime failure, 2 a usage error (click's own).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import uvicorn

from gateway import schema
from gateway.actions.context import ADMIN
from gateway.app import CONFIG_ENV, storage_types
from gateway.diagnostics import render_json, render_text
from gateway.http import PREFIX, reply_response
from gateway.interpreter import Interpreter
from gateway.loader import check, discover
from gateway.model import Registry
from gateway.settings import Settings, with_environment, with_flags
from gateway.storage import open_storage

DEFAULT_CONFIG = Path("workflows.d")

config_option = click.option(
    "--config", "config", type=click.Path(path_type=Path), multiple=True,
    help="A folder or file of YAML workflows (repeatable; default: workflows.d).")
database_option = click.option(
    "--database", envvar="GATEWAY_DATABASE_URL", default=None,
    help="sqlite:///FILE or postgresql://... (default: the settings, then sqlite:///gateway.db).")


def _load_or_exit(paths: Sequence[Path]) -> Registry:
    registry, problems = check(list(paths) or [DEFAULT_CONFIG])
    if problems:
        click.echo(render_text(problems), err=True)
        sys.exit(1)
    return registry


def _settled(registry: Registry, **flags: Any) -> Settings:
    return with_flags(with_environment(registry.settings), **flags)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    sys.exit(1 if problems else 0)


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
    os.environ[CONFIG_ENV] = os.pathsep.join(str(p.resolve()) for p in paths)
    os.environ["GATEWAY_DATABASE_URL"] = settings.database
    uvicorn.run("gateway.app:app_from_environment", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop", http="httptools",
                log_level="info", access_log=False, proxy_headers=False)


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param takes KEY=VALUE, not {pair!r}")
        if key in params:
            previous = params[key]
            params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            params[key] = value
    return params


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
    registry = Registry(registry.workflows, registry.events, registry.data_types, settings,
                        registry.files)
    status, body, run_id = asyncio.run(_run_once(registry, name, _parse_params(pairs)))
    click.echo(f"HTTP {status}  run {run_id}", err=True)
    click.echo(body)
    sys.exit(0 if status < 400 else 1)


async def _run_once(registry: Registry, name: str, params: dict[str, Any]) -> tuple[int, str, str]:
    storage = open_storage(registry.settings.database)
    await storage.open(storage_types(registry))
    try:
        result = await Interpreter(registry, storage).run(
            registry.workflows[name], params, source="cli", identity=ADMIN)
    finally:
        await storage.close()
    response = reply_response(result)
    return response.status_code, bytes(response.body).decode(), result.run_id


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
        click.echo(f"{wf.method:<6} {PREFIX}/{wf.name:<32} auth={wf.auth:<6} {wf.location}")


@main.command("schema")
def print_schema() -> None:
    """Print the JSON Schema of the YAML files (for editors' YAML language servers).

    \b
    Example:
      gateway schema > gateway.schema.json
    """
    click.echo(json.dumps(schema.schema_document(), indent=2))
