"""`return_redirect`: ends the run with a 302 to a URL the settings allow, the returned data
as its query parameters (Bubble's "redirect" response type; see `gateway.runtime.redirect`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.source import DocumentKind
from gateway.runtime.action_spec import Action, StepCheck
from gateway.runtime.context import Reply, RunContext
from gateway.runtime.redirect import query_pairs, redirect_reply, refusal
from gateway.templates import templating


async def return_redirect(ctx: RunContext, args: dict[str, Any]) -> Reply:
    settings = ctx.settings
    return redirect_reply(args.get("url"), query_pairs(args.get("data")),
                          settings.redirect_allowed, settings.redirect_max_url)


def check_redirect(check: StepCheck, args: Mapping[str, Any]) -> None:
    """A custom event returns data, not a redirect; a constant target is allowed."""
    if check.kind == DocumentKind.CUSTOM_EVENT:
        check.error(check.base + "/action", "event.bad-return",
                    "a custom event returns data, not a redirect: use return_data")
    check_target(check, check.base + "/url", args.get("url"))


def check_target(check: StepCheck, pointer: str, url: Any) -> None:
    """A target that is no template is checked against `redirects.allowed` at load time."""
    settings = check.settings
    if settings is None or not isinstance(url, str) or templating.is_template(url):
        return
    reason = refusal(url, settings.redirect_allowed)
    if reason is not None:
        check.error(pointer, "redirect.not-allowed", reason)


ACTIONS = (
    Action("return_redirect", return_redirect, check=check_redirect, waits=False, replies=True),
)
