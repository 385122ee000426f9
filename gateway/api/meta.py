"""`/api/1.1/meta`: what the API exposes, as a short JSON listing for callers that look before
they call. Bubble's listing gives the Data API's types by method; this one does too (`get`,
`post`, `patch`, `put`, `delete`: every exposed type answers each), then each type's fields
and each exposed workflow's method, access level and parameters. The full descriptions are
the documents beside it: `swagger.json` (Swagger 2.0) and `openapi.json` (OpenAPI 3.1)."""

from __future__ import annotations

from typing import Any

from gateway.api import openapi, swagger
from gateway.runtime.model import ROUTE_PREFIX, Registry

PATH = "/api/1.1/meta"
DATA_METHODS = ("get", "post", "patch", "put", "delete")


def listing(registry: Registry) -> dict[str, Any]:
    """The exposed types and workflows of the registry."""
    prefix = registry.settings.prefix
    types = sorted(registry.data_api)
    return {
        **{method: types for method in DATA_METHODS},
        "types": {url: {"name": name, "url": f"{prefix}/api/1.1/obj/{url}",
                        "fields": {key: {"type": f.type, "list": f.list}
                                   for key, f in registry.data_types[name].fields.items()}}
                  for url, name in sorted(registry.data_api.items())},
        "workflows": {wf.name: {"url": f"{prefix}{ROUTE_PREFIX}/{wf.name}",
                                "method": wf.method, "auth": wf.auth,
                                "params": {p.name: {"type": p.type, "list": p.list,
                                                    "optional": not openapi.is_required(p)}
                                           for p in wf.params}}
                      for wf in registry.exposed()},
        "documents": {"swagger": prefix + swagger.PATH, "openapi": prefix + openapi.PATH},
    }
