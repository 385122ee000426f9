"""`gateway db`: the database's migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from gateway.cli.group import config_option, database_option, main, store_of, with_store
from gateway.storage import Storage


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
    registry, storage = store_of(config, database)
    applied = asyncio.run(with_store(storage, registry, _migrations_applied))
    click.echo("\n".join(f"applied {name}" for name in applied) or "already up to date")


async def _migrations_applied(storage: Storage) -> list[str]:
    return [*storage.migrations_applied, *await storage.migrate()]
