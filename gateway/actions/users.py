"""User actions: `signup_user`, `login_user` and `logout_user`.

The work is the run's `Accounts`; these check what a step gives it. A workflow that signs up
or logs in and returns no data answers `{"user_id", "token", "expires"}`, as Bubble does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.actions.records import check_fields
from gateway.core import pointer as ptr
from gateway.core.errors import InvalidDataError, RunError, did_you_mean
from gateway.runtime.accounts import Accounts
from gateway.runtime.action_spec import Action, StepCheck
from gateway.runtime.coercion import convert_value
from gateway.runtime.context import MIN_SECRET_LENGTH, RunContext
from gateway.runtime.file_values import kept_fields

USER = "user"


def _accounts(ctx: RunContext) -> Accounts:
    if ctx.accounts is None:
        raise RunError("no database is configured for this run")
    return ctx.accounts


def _remember(value: Any) -> bool:
    if value is None or value == "":
        return False
    try:
        return bool(convert_value(value, "boolean"))
    except ValueError as exc:
        raise InvalidDataError("remember must be yes or no") from exc


def _password(ctx: RunContext, args: Mapping[str, Any]) -> Any:
    """The step's password, noted as one for the run log to leave out."""
    password = args.get("password")
    if isinstance(password, str) and len(password) >= MIN_SECRET_LENGTH:
        ctx.passwords.add(password)
    return password


async def signup_user(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    password = _password(ctx, args)
    spec = ctx.data_types.get(USER)
    fields = dict(args.get("fields") or {})
    checked = await kept_fields(ctx, spec, check_fields(spec, fields)) if spec is not None \
        else fields
    change, result = await _accounts(ctx).signup(
        args.get("email"), password, checked, _remember(args.get("remember")),
        ctx.identity.user_id)
    ctx.changes.add(change)
    return result


async def login_user(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _accounts(ctx).login(args.get("email"), _password(ctx, args),
                                      _remember(args.get("remember")), ctx.client)


async def logout_user(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"logged_out": await _accounts(ctx).logout(ctx.identity.token_hash)}


def check_signup(check: StepCheck, args: Mapping[str, Any]) -> None:
    """The other fields are the user type's own, and their constant values fit."""
    spec = check.data_type(USER, check.base + "/action")
    fields = args.get("fields") or {}
    if spec is None or not isinstance(fields, dict):
        return
    for key, value in fields.items():
        pointer = ptr.join(check.base, "fields", key)
        if key == "email":
            check.error(pointer, "ref.unknown-field",
                        "the e-mail is the step's own `email`, not one of its fields", key=True)
        elif key not in spec.fields:
            check.error(pointer, "ref.unknown-field", f"data type 'user' has no field '{key}'"
                        + did_you_mean(key, spec.fields), key=True)
        else:
            field = spec.fields[key]
            check.check_value(pointer, value, field.type, field.list)


ACTIONS = (
    Action("signup_user", signup_user, check=check_signup, writes=True,
           replies_by_default=True),
    Action("login_user", login_user, replies_by_default=True),
    Action("logout_user", logout_user, writes=False),
)
