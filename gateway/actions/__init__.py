"""Step actions: one module per family, each declaring its actions (`Action`) beside their
functions. `ACTIONS` collects them by name; nothing else names an action."""

from __future__ import annotations

from gateway.action import Action, collect
from gateway.actions import flow, jobs, outbound, records, users

ACTIONS: dict[str, Action] = collect(flow.ACTIONS, records.ACTIONS, users.ACTIONS,
                                     outbound.ACTIONS, jobs.ACTIONS)
