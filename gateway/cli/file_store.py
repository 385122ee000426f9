"""`gateway files`: the file store's upkeep."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from gateway.cli.group import config_option, database_option, main, settled, store_of, with_store
from gateway.core.clock import utc_now
from gateway.core.settings import parse_duration
from gateway.files.service import open_files
from gateway.runtime.file_values import sweep


@main.group()
def files() -> None:
    """Look after the files and images the gateway keeps.

    \b
    Example:
      gateway files sweep --older-than 1h
    """


@files.command("sweep")
@click.option("--older-than", default="1h", show_default=True, metavar="DURATION",
              help="Only files kept longer ago than this (a newer one may belong to a "
                   "write that has not committed yet).")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@config_option
@database_option
def files_sweep(older_than: str, dry_run: bool, config: tuple[Path, ...],
                database: str | None) -> None:
    """Delete the kept files that no record holds: uploads a failed run left behind, and
    files whose record went while the server was stopping. Prints each id deleted, then a
    count. Files no record holds are never served, so this only frees space.

    \b
    Example:
      gateway files sweep --older-than 24h --dry-run
    """
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    registry, storage = store_of(config, database)
    kept = open_files(settled(registry, database=database))

    async def work() -> tuple[int, list[str]]:
        try:
            return await with_store(storage, registry, lambda s: sweep(
                s, registry.data_types, kept, utc_now() - age, dry_run=dry_run),
                sync_indexes=False)
        finally:
            await kept.close()

    seen, gone = asyncio.run(work())
    for id in gone:
        click.echo(id)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(gone)} of {seen} kept files", err=True)
