"""`gateway users`: users made (with a password read from stdin), listed, shown and
disabled (a disabled user cannot log in, and its tokens stop working)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from datetime import datetime
from pathlib import Path

import click

from gateway.cli.group import Failed, config_option, database_option, main, store_of, with_store
from gateway.core.clock import utc_now
from gateway.core.encoding import dumps, escape
from gateway.runtime.accounts import Accounts, fold_email
from gateway.storage import Storage
from gateway.storage.contract import Account

LIST_LIMIT = 1000  # users `gateway users list` prints at most


@main.group()
def users() -> None:
    """Manage users' accounts (records of type `user` and their log-ins).

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | gateway users create --email ada@example.com --password-stdin
      gateway users disable ada@example.com
    """


@users.command("create")
@click.option("--email", required=True, help="The user's e-mail address.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of stdin (never an argument, "
                   "which other users of the machine could see).")
@config_option
@database_option
def users_create(email: str, password_stdin: bool, config: tuple[Path, ...],
                 database: str | None) -> None:
    """Make a user and print its id; with --password-stdin it can log in.

    \b
    Example:
      gateway users create --email ada@example.com --password-stdin < password.txt
    """
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    registry, storage = store_of(config, database)

    async def create(store: Storage) -> str:
        if password is not None:
            accounts = Accounts(store.users, registry.settings)
            return (await accounts.create_user(email, password, {}, None)).id
        folded = fold_email(email)
        if await store.users.find_account(folded) is not None:
            raise Failed(f"a user has the e-mail {folded!r} already")
        return (await store.records.create("user", {"email": folded})).id

    user_id = asyncio.run(with_store(storage, registry, create, sync_indexes=False))
    click.echo(user_id)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@config_option
@database_option
def users_list(as_json: bool, config: tuple[Path, ...], database: str | None) -> None:
    """List users, oldest first: id, e-mail, created, whether they have a password, and
    whether they are disabled (never a password or a token).

    \b
    Example:
      gateway users list --json
    """
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry,
                                   lambda s: s.users.list_accounts(LIST_LIMIT),
                                   sync_indexes=False))
    for account in found:
        _show(account, as_json)


@users.command("show")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
@database_option
def users_show(user: str, as_json: bool, config: tuple[Path, ...],
               database: str | None) -> None:
    """Show one user, by id or e-mail.

    \b
    Example:
      gateway users show ada@example.com
    """
    _show(_find(user, config, database), as_json)


@users.command("disable")
@click.argument("user")
@config_option
@database_option
def users_disable(user: str, config: tuple[Path, ...], database: str | None) -> None:
    """Disable a user, by id or e-mail: it cannot log in, and its tokens stop working
    within a second, on every instance.

    \b
    Example:
      gateway users disable ada@example.com
    """
    account = _find(user, config, database)
    registry, storage = store_of(config, database)
    added = asyncio.run(with_store(storage, registry, lambda s: s.users.disable_user(
        account.user_id, utc_now()), sync_indexes=False))
    click.echo(f"disabled {account.user_id}" if added
               else f"{account.user_id} was disabled already")


@users.command("enable")
@click.argument("user")
@config_option
@database_option
def users_enable(user: str, config: tuple[Path, ...], database: str | None) -> None:
    """Let a disabled user, by id or e-mail, log in again (the tokens it had before it was
    disabled stay revoked).

    \b
    Example:
      gateway users enable ada@example.com
    """
    account = _find(user, config, database)
    registry, storage = store_of(config, database)
    removed = asyncio.run(with_store(storage, registry, lambda s: s.users.enable_user(
        account.user_id), sync_indexes=False))
    click.echo(f"enabled {account.user_id}" if removed
               else f"{account.user_id} was not disabled")


def _find(user: str, config: tuple[Path, ...], database: str | None) -> Account:
    registry, storage = store_of(config, database)
    found = asyncio.run(with_store(storage, registry,
                                   lambda s: s.users.find_account(user.strip()),
                                   sync_indexes=False))
    if found is None:
        raise Failed(f"no user {user!r}")
    return found


def _show(account: Account, as_json: bool) -> None:
    if as_json:
        click.echo(dumps(dataclasses.asdict(account)))
        return
    click.echo(f"{account.user_id}  {escape(account.email or '-'):<32} "
               f"created {_when(account.created_at)}  "
               f"{'password' if account.has_password else 'no password'}"
               + (f"  DISABLED {_when(account.disabled_at)}" if account.disabled_at else ""))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"
