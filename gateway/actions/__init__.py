"""Step actions: one module per family, each declaring its actions (`Action`) beside their
functions. `ACTIONS` collects them by name; nothing else names an action."""

from __future__ import annotations

from gateway.actions import (
    account_changes,
    flow,
    http_request,
    mail,
    records,
    redirects,
    scheduling,
    users,
)
from gateway.runtime.action_spec import Action, collect

ACTIONS: dict[str, Action] = collect(flow.ACTIONS, records.ACTIONS, users.ACTIONS,
                                     http_request.ACTIONS, mail.ACTIONS, scheduling.ACTIONS,
                                     account_changes.ACTIONS, redirects.ACTIONS)
