"""The commands over the database: the run log (`runs`), admin keys (`keys`) and
migrations (`db`)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path

import click

from gateway.auth import key_hash, new_key
from gateway.cli.base import (
    Failed,
    config_option,
    database_option,
    main,
    store_of,
    with_store,
)
from gateway.clock import utc_now
from gateway.encoding import dumps, dumps_pretty, escape
from gateway.settings import parse_duration
from gateway.storage import Storage


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
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry, lambda s: s.runs.list_runs(
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
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry, lambda s: s.runs.get_run(run_id),
                                    sync_indexes=False))
    if found is None:
        raise Failed(f"no run with id {run_id}")
    click.echo(dumps_pretty(found))


@main.group()
def keys() -> None:
    """Manage admin API keys (kept in the configured database, as a hash only).

    \b
    Example:
      gateway keys create --label ci
      curl -H "Authorization: Bearer <key>" http://127.0.0.1:8000/api/1.1/wf/<name>
    """


@keys.command("create")
@click.option("--label", required=True, help="A name for the key, unique among keys.")
@config_option
@database_option
def keys_create(label: str, config: tuple[Path, ...], database: str | None) -> None:
    """Make a new admin API key and print it, once, as the last line.

    \b
    Example:
      gateway keys create --label ci --database postgresql://gateway@db.internal/gateway
    """
    if not label.strip() or len(label) > 200 or not label.isprintable():
        raise click.BadParameter("a label is 1 to 200 printable characters (no control "
                                 "character, no line break)", param_hint="--label")
    key = new_key()
    registry, storage = store_of(config, database)
    asyncio.run(with_store(storage, registry, lambda s: s.keys.create_key(
        label, key_hash(key), utc_now()), sync_indexes=False))
    click.echo(f"Created the admin key {label!r}. It is shown once; keep it now:", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
@database_option
def keys_list(as_json: bool, config: tuple[Path, ...], database: str | None) -> None:
    """List the admin keys: label, created, last used, revoked (never the key).

    \b
    Example:
      gateway keys list
    """
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry, lambda s: s.keys.list_keys(),
                                    sync_indexes=False))
    for key in found:
        if as_json:
            click.echo(dumps(dataclasses.asdict(key)))
            continue
        click.echo(f"{escape(key.label):<24} created {_when(key.created_at)}  "
                   f"last used {_when(key.last_used_at)}"
                   + (f"  REVOKED {_when(key.revoked_at)}" if key.revoked_at else ""))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


@keys.command("revoke")
@click.argument("label")
@config_option
@database_option
def keys_revoke(label: str, config: tuple[Path, ...], database: str | None) -> None:
    """Revoke a key: within a second it opens nothing, on every instance.

    \b
    Example:
      gateway keys revoke ci
    """
    registry, storage = store_of(config, database)
    revoked = asyncio.run(with_store(storage, registry, lambda s: s.keys.revoke_key(
        label, utc_now()), sync_indexes=False))
    if not revoked:
        raise Failed(f"no active key labelled {label!r}")
    click.echo(f"revoked {label!r}")


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


