"""`gateway keys`: admin API keys, created, listed and revoked."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path

import click

from gateway.api.auth import key_hash, new_key
from gateway.cli.group import Failed, config_option, database_option, main, store_of, with_store
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, escape


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
