"""The Data API's endpoints in Swagger 2.0, under the `Data` tag: one set of paths per exposed
data type (relative to the base path `/api/1.1`, as Bubble writes them) and a definition of
its records. `gateway.api.swagger` adds them to its document."""

from __future__ import annotations

from typing import Any

from gateway.api.data_openapi import fields_schema, record_schema
from gateway.api.data_operations import CONSTRAINT_TYPES, MAX_BULK, MAX_LIMIT
from gateway.runtime.model import Registry

TAG = "Data"
RESERVED = frozenset({"Success", "Error", "Refusal", "Created"})  # our own definitions
_ERRORS = {
    "400": {"description": "ERROR (Unrecognized field: X), INVALID_DATA or INVALID_BODY",
            "schema": {"$ref": "#/definitions/Error"}},
    "404": {"description": "NOT_FOUND (an unknown type or constraint type) or MISSING_DATA "
                           "(no such record, or one the caller may not find)",
            "schema": {"$ref": "#/definitions/Error"}},
}
_BAD_TOKEN = {"description": "UNAUTHORIZED: a credential that is not valid",
              "schema": {"$ref": "#/definitions/Error"}}
_REFUSED = {"description": "Unauthorized: a credential that is not valid (Error), or a write "
                           "the privacy rules do not grant (Refusal, Bubble's body)"}


def definition(url: str) -> str:
    """The name of a type's record definition: its URL name, unless one of ours has it."""
    return url if url not in RESERVED else f"obj_{url}"


def data_definitions(registry: Registry) -> dict[str, Any]:
    definitions = {definition(url): record_schema(registry.data_types[name],
                                                   registry.settings.data_api_display_keys)
                   for url, name in sorted(registry.data_api.items())}
    if registry.data_api:
        definitions["Created"] = {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["success"]}, "id": {"type": "string"}}}
        definitions["Refusal"] = {
            "type": "object", "required": ["error_class", "args", "message", "translation"],
            "properties": {"error_class": {"type": "string", "enum": ["Unauthorized"]},
                           "args": {"type": "object", "properties": {
                               "code": {"type": "string"}}},
                           "message": {"type": "string"},
                           "translation": {"type": "string"}}}
    return definitions


def data_paths(registry: Registry, taken: set[str]) -> dict[str, Any]:
    """The paths of every exposed data type; `taken` holds the operation ids already used
    (the workflows' names), which the Data API's own ids keep clear of."""
    paths: dict[str, Any] = {}
    for url, name in sorted(registry.data_api.items()):
        fields = fields_schema(registry.data_types[name],
                               registry.settings.data_api_display_keys)
        record = {"$ref": f"#/definitions/{definition(url)}"}
        ids = _Ids(taken, url)
        body = [{"name": "body", "in": "body", "required": True, "schema": fields}]
        id = [{"name": "id", "in": "path", "required": True, "type": "string"}]
        done = {"204": {"description": "Done (no body)"}}
        paths[f"/obj/{url}"] = {
            "get": _op(ids("search"), f"Search {name} records", _search_params(),
                       {"200": {"description": "A page of records", "schema": _page(record)}}),
            "post": _op(ids("create"), f"Create a {name}", body, {"201": {
                "description": "Created", "schema": {"$ref": "#/definitions/Created"}}},
                        writes=True)}
        paths[f"/obj/{url}/bulk"] = {"post": {
            **_op(ids("bulk_create"), f"Create up to {MAX_BULK} {name} records, one JSON "
                  "object per line", [{"name": "body", "in": "body", "required": True,
                                       "schema": {"type": "string"}}],
                  {"200": {"description": "One result line per item",
                           "schema": {"type": "string"}}}, writes=True),
            "consumes": ["text/plain"], "produces": ["text/plain", "application/json"]}}
        paths[f"/obj/{url}/{{id}}"] = {
            "parameters": id,
            "get": _op(ids("get"), f"A {name} by id", [], {"200": {
                "description": "The record", "schema": {
                    "type": "object", "properties": {"response": record}}}}),
            "patch": _op(ids("modify"), f"Change fields of a {name}", body, done, writes=True),
            "put": _op(ids("replace"), f"Replace a {name} (fields not given are cleared)",
                       body, done, writes=True),
            "delete": _op(ids("delete"), f"Delete a {name}", [], done, writes=True),
        }
    return paths


class _Ids:
    """Operation ids of one type, `<verb>_<type>`, clear of the ids already taken."""

    def __init__(self, taken: set[str], url: str) -> None:
        self.taken = taken
        self.url = url

    def __call__(self, verb: str) -> str:
        id = f"{verb}_{self.url}"
        while id in self.taken:
            id = f"obj_{id}"
        self.taken.add(id)
        return id


def _op(id: str, summary: str, params: list[dict[str, Any]], answers: dict[str, Any], *,
        writes: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [TAG], "operationId": id, "summary": summary,
                          "responses": {**answers, **_ERRORS,
                                        "401": _REFUSED if writes else _BAD_TOKEN}}
    if params:
        op["parameters"] = params
    return op


def _search_params() -> list[dict[str, Any]]:
    def query(name: str, type: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "type": type, **more}

    return [
        query("constraints", "string", description="A JSON array of {key, constraint_type, "
              "value}; constraint types: " + ", ".join(CONSTRAINT_TYPES)),
        query("cursor", "integer", minimum=0),
        query("limit", "integer", minimum=1, maximum=MAX_LIMIT),
        query("sort_field", "string"),
        query("descending", "boolean"),
        query("additional_sort_fields", "string",
              description="A JSON array of {sort_field, descending}"),
        query("exclude_remaining", "boolean"),
    ]


def _page(record: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"response": {"type": "object", "properties": {
        "cursor": {"type": "integer"}, "count": {"type": "integer"},
        "remaining": {"type": "integer"}, "results": {"type": "array", "items": record}}}}}
