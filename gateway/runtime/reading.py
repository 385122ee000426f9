"""How a run reads records: through the privacy rules that apply to its caller (`viewer`),
and, for parameters of a data type, from the ids a call sends (`load_records`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.core.errors import InvalidDataError
from gateway.runtime.context import Identity, current_user
from gateway.runtime.model import Registry, Workflow
from gateway.runtime.param import Param
from gateway.runtime.privacy import EXEMPT, Scans, Viewer

if TYPE_CHECKING:
    from gateway.storage import Storage


def viewer(registry: Registry, scans: Scans, workflow: Workflow, identity: Identity) -> Viewer:
    """The privacy rules a run's reads go through: none for admin keys and workflows
    that ignore them. A run that reads no records still has one: `current_user`."""
    if identity.kind == "admin" or workflow.ignore_privacy_rules:
        return EXEMPT
    user = current_user(identity)
    if user is None and not (workflow.may_wait or workflow.record_params):
        return EXEMPT  # no record to read, and no `current_user` to cut
    return Viewer(registry.privacy, user, scans)


async def load_records(storage: Storage | None, registry: Registry, declared: tuple[Param, ...],
                       params: dict[str, Any], viewer: Viewer = EXEMPT) -> dict[str, Any]:
    """Parameters of a data type arrive as ids; each must name an existing record that
    the caller may find (the same answer either way, so that ids do not leak)."""
    most = registry.settings.max_list_ids
    for param in declared:
        value = params.get(param.name)
        if value is None or storage is None:
            continue
        ids = value if param.list else [value]
        if len(ids) > most:
            raise InvalidDataError(f"Invalid value for parameter {param.name} (at most "
                                   f"{most} ids, limits.max_list_ids)")
        records = []
        for index, record_id in enumerate(ids, 1):
            records.append(viewer.sift(param.type, await storage.records.get(param.type,
                                                                             record_id)))
            if index % 100 == 0:
                await asyncio.sleep(0)  # a store that reads on the loop: let the timeout in
        if any(record is None for record in records):
            raise InvalidDataError(f"Invalid value for parameter {param.name} "
                                   f"(no {param.type} with that id)")
        params[param.name] = records if param.list else records[0]
    return params
