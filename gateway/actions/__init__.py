"""Step actions: one module per family. `ACTIONS` maps each action name to its function."""

from __future__ import annotations

from gateway.actions import flow, records
from gateway.model import Execute

ACTIONS: dict[str, Execute] = {**flow.ACTIONS, **records.ACTIONS}
