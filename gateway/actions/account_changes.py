"""Bubble's account actions: `update_credentials`, `assign_temp_password`,
`send_password_reset_email`, `reset_password` and `logout_other_sessions`.

The work is the run's `Accounts`; these check what a step gives it. Every password, reset
token and reset link a step sees or makes is noted in `ctx.passwords`, so the run log never
keeps it (a temporary password is in the step's result for the workflow to answer once).
A run is privileged when it acts as admin (an admin key, a database trigger) or ignores
privacy rules: it may change another user's credentials, without the current password.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from gateway.actions.mail import build_message
from gateway.actions.records import record_id
from gateway.actions.users import USER
from gateway.core.errors import (
    DuplicateError,
    ForbiddenError,
    InvalidDataError,
    RecordNotFoundError,
    RunError,
    UnauthorizedError,
    UsedEmailError,
)
from gateway.runtime.accounts import Accounts, fold_email
from gateway.runtime.action_spec import Action
from gateway.runtime.coercion import convert_value
from gateway.runtime.context import MIN_SECRET_LENGTH, RunContext
from gateway.runtime.services import Mailer, MailError

log = logging.getLogger("gateway.run")

TOKEN_MARK = "{token}"  # where a reset link takes the token
LINK_MARK = "{link}"  # where a reset e-mail's text takes the link
RESET_LIFETIME = 3600  # seconds a reset token lasts unless the step says
MIN_RESET_LIFETIME, MAX_RESET_LIFETIME = 60, 7 * 86_400
DEFAULT_SUBJECT = "Reset your password"
DEFAULT_TEXT = "To choose a new password, follow this link:\n\n{link}\n\n" \
    "If you did not ask for it, ignore this message."


def _accounts(ctx: RunContext) -> Accounts:
    if ctx.accounts is None or ctx.storage is None:
        raise RunError("no database is configured for this run")
    return ctx.accounts


def privileged(ctx: RunContext) -> bool:
    """Whether the run acts as admin or ignores privacy rules."""
    return ctx.identity.kind == "admin" or ctx.ignore_privacy_rules


def _secret(ctx: RunContext, value: Any) -> Any:
    """A password or token, kept out of the run log."""
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
        ctx.passwords.add(value)
    return value


def _flag(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    try:
        return bool(convert_value(value, "boolean"))
    except ValueError as exc:
        raise InvalidDataError(f"{name} must be yes or no") from exc


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _target(ctx: RunContext, args: Mapping[str, Any], action: str) -> str:
    """The user a step acts on: its `user` (privileged runs only), else the current user."""
    if _given(args.get("user")):
        if not privileged(ctx):
            raise ForbiddenError(f"{action} on another user needs an admin key or a workflow "
                                 "that ignores privacy rules")
        return record_id(args["user"])
    if ctx.identity.user_id is None:
        raise UnauthorizedError(f"{action} needs a logged-in user")
    return ctx.identity.user_id


async def _email_of(ctx: RunContext, user_id: str) -> str:
    """The e-mail a user logs in with, or its record shows."""
    found = await _accounts(ctx).users.user_credential(user_id)
    if found is not None:
        return found[0]
    assert ctx.storage is not None
    record = await ctx.storage.records.get(USER, user_id)
    if record is None:
        raise RecordNotFoundError(f"There is no user {user_id}")
    return fold_email(record.get("email"))


def _keep(ctx: RunContext, user_id: str) -> str | None:
    """The caller's own token, which a change of its own password leaves alone."""
    return ctx.identity.token_hash if ctx.identity.user_id == user_id else None


async def update_credentials(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    accounts = _accounts(ctx)
    new_email, new_password = args.get("email"), _secret(ctx, args.get("password"))
    current = _secret(ctx, args.get("current_password"))
    if not _given(new_email) and not _given(new_password):
        raise InvalidDataError("update_credentials needs a new email or a new password")
    user_id = _target(ctx, args, "update_credentials")
    if _given(current) or not privileged(ctx):
        email = await accounts.check_password(user_id, current, ctx.client)
    else:
        email = await _email_of(ctx, user_id)
        async with accounts.turns(email, ctx.client):
            pass  # bounded like a log-in, and never counted as a failure
    changed_email = _given(new_email) and fold_email(new_email) != email
    if changed_email:
        email = fold_email(new_email)
        assert ctx.storage is not None
        try:
            change = await ctx.storage.records.update(USER, user_id, {"email": email},
                                                      at=ctx.clock())
        except DuplicateError as exc:
            raise UsedEmailError("This email is already in use") from exc
        ctx.changes.add(change)
    ended = 0
    if _given(new_password):
        await accounts.change_password(user_id, email, new_password)
        if not _flag(args.get("keep_other_sessions"), "keep_other_sessions"):
            ended = len(await accounts.revoke_others(user_id, _keep(ctx, user_id)))
    ctx.remark(email_changed=changed_email, password_changed=_given(new_password),
               sessions_ended=ended)
    return {"user_id": user_id, "email": email, "email_changed": changed_email,
            "password_changed": _given(new_password), "sessions_ended": ended}


async def assign_temp_password(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    if not privileged(ctx):
        raise ForbiddenError("assign_temp_password needs an admin key or a workflow that "
                             "ignores privacy rules")
    accounts = _accounts(ctx)
    if not _given(args.get("user")):
        raise InvalidDataError("assign_temp_password needs the user")
    user_id = record_id(args["user"])
    password = _secret(ctx, accounts.temp_password())
    email = await _email_of(ctx, user_id)
    async with accounts.turns(email, ctx.client):
        await accounts.change_password(user_id, email, password)
    ended = len(await accounts.revoke_others(user_id, None))
    ctx.remark(sessions_ended=ended)
    return {"user_id": user_id, "password": password}


def _lifetime(value: Any) -> int:
    if value is None or value == "":
        return RESET_LIFETIME
    try:
        seconds = int(convert_value(value, "number"))
    except (ValueError, TypeError) as exc:
        raise InvalidDataError("expires_in must be a number of seconds") from exc
    if not MIN_RESET_LIFETIME <= seconds <= MAX_RESET_LIFETIME:
        raise InvalidDataError(f"expires_in must be between {MIN_RESET_LIFETIME} and "
                               f"{MAX_RESET_LIFETIME} seconds")
    return seconds


async def send_password_reset_email(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    """The same answer whether or not a user has this e-mail, and as soon: nothing tells
    who exists, not even the time the SMTP server takes. The message goes once the run has
    committed (its token with it), in the background; a refusal by the SMTP server is
    logged, never answered."""
    accounts = _accounts(ctx)
    mailer = ctx.services.mailer
    if mailer is None:
        raise RunError("send_password_reset_email needs an SMTP server: smtp.host in the "
                       "settings")
    link = str(args.get("link") or "")
    if TOKEN_MARK not in link:
        raise InvalidDataError(f"send_password_reset_email: link must hold {TOKEN_MARK}, "
                               "where the reset token goes")
    lifetime = _lifetime(args.get("expires_in"))

    def message(token: str) -> tuple[EmailMessage, list[str]]:
        filled = link.replace(TOKEN_MARK, token)
        text = str(args.get("text") or DEFAULT_TEXT).replace(LINK_MARK, filled)
        html = args.get("html")
        return build_message(
            {"to": fold_email(args.get("email")), "from": args.get("from"),
             "subject": args.get("subject") or DEFAULT_SUBJECT, "text": text,
             "html": None if html is None else str(html).replace(LINK_MARK, filled)},
            mailer.sender)

    message("x" * 43)  # a message that cannot be made is refused for every address alike
    made = await accounts.reset_token(args.get("email"), lifetime, ctx.client)
    if made is not None:
        _, token = made
        _secret(ctx, token)
        _secret(ctx, link.replace(TOKEN_MARK, token))
        built, recipients = message(token)
        plain = [email.utils.parseaddr(r)[1] for r in recipients]
        ctx.after_commit.append(lambda: _send(mailer, built, plain))
    return {"requested": True, "expires_in": lifetime}


async def _send(mailer: Mailer, message: EmailMessage, recipients: list[str]) -> None:
    try:
        refused = await mailer.send(message, recipients)
    except MailError as exc:
        log.warning("send_password_reset_email: %s", exc)
        return
    if refused:
        log.warning("send_password_reset_email: the SMTP server refused %s", refused)


async def reset_password(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    token, password = _secret(ctx, args.get("token")), _secret(ctx, args.get("password"))
    user_id = await _accounts(ctx).reset_password(token, password, args.get("email"),
                                                  ctx.client)
    return {"user_id": user_id}


async def logout_other_sessions(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    accounts = _accounts(ctx)
    user_id = _target(ctx, args, "logout_other_sessions")
    async with accounts.logins.emails.turn(f"id:{user_id}"):
        ended = len(await accounts.revoke_others(user_id, _keep(ctx, user_id)))
    ctx.remark(sessions_ended=ended)
    return {"sessions_ended": ended}


ACTIONS = (
    Action("update_credentials", update_credentials, writes=True),
    Action("assign_temp_password", assign_temp_password),
    Action("send_password_reset_email", send_password_reset_email),
    Action("reset_password", reset_password),
    Action("logout_other_sessions", logout_other_sessions),
)
