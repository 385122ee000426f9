"""The `gateway` command's group, its shared options, and the one place its errors become
exit codes: 0 ok, 1 a validation or runtime failure, 2 a usage error (click's own)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from gateway import tracing
from gateway.compiler.loader import check, errors
from gateway.config.diagnostics import render_text
from gateway.core.errors import ConfigError, GatewayError
from gateway.core.settings import Settings, with_environment, with_flags
from gateway.runtime.model import Registry
from gateway.server.app import storage_types
from gateway.storage import Storage, open_storage
from gateway.webhooks import signature

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


def load_or_exit(paths: Sequence[Path]) -> Registry:
    registry, problems = check(list(paths) or [DEFAULT_CONFIG])
    if errors(problems):
        raise ConfigError(problems)
    if problems:  # warnings only: said, and the config loads
        click.echo(render_text(problems), err=True)
    return registry


def settled(registry: Registry, **flags: Any) -> Settings:
    return with_flags(with_environment(registry.settings), **flags)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="workflow-gateway")
def main() -> None:
    """The workflow gateway: YAML workflows validated, compiled and served as HTTP endpoints."""


def refuse_unready(settings: Settings) -> None:
    """Stop a process that runs workflows before it starts when its environment lacks what
    the settings need: a declared secret, the packages tracing needs."""
    missing = settings.missing_secrets()
    if missing:
        raise Failed("error: the settings declare secrets the environment does not set: "
                     + ", ".join(missing))
    untraceable = tracing.missing() if settings.tracing_enabled else None
    if untraceable is not None:
        raise Failed(f"error: {untraceable}")


def refuse_unusable_secrets(registry: Registry, settings: Settings) -> None:
    problems = signature.secret_problems(registry, settings.secrets)
    if problems:
        raise Failed("error: a webhook secret the environment sets cannot check signatures: "
                     + "; ".join(problems))


def store_of(config: tuple[Path, ...], database: str | None) -> tuple[Registry, Storage]:
    registry = load_or_exit(config)
    settings = settled(registry, database=database)
    return registry, open_storage(settings.database)


async def with_store(storage: Storage, registry: Registry,
                      work: Callable[[Storage], Awaitable[T]], *, sync_indexes: bool = True) -> T:
    await storage.open(storage_types(registry), sync_indexes=sync_indexes)
    try:
        return await work(storage)
    finally:
        await storage.close()

