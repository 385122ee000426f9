"""The Data API's endpoints as OpenAPI 3.1 path items, under a `Data` tag: one set per
exposed data type, with its fields' schema. The OpenAPI document of the gateway adds them
to its `paths` (`paths.update(data_paths(registry))`)."""

from __future__ import annotations

from typing import Any

from gateway.api.data_operations import CONSTRAINT_TYPES, MAX_BULK, MAX_LIMIT
from gateway.runtime.model import Registry
from gateway.storage.common.geo import MAX_ADDRESS_CHARS
from gateway.storage.contract import FieldSpec, TypeSpec

TAG = "Data"
PREFIX = "/api/1.1/obj"
# A geographic address as Bubble's Data API sends and returns it.
GEOGRAPHIC_ADDRESS: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                      "properties": {
    "address": {"type": "string", "maxLength": MAX_ADDRESS_CHARS},
    "lat": {"type": "number", "minimum": -90, "maximum": 90},
    "lng": {"type": "number", "minimum": -180, "maximum": 180}}}
# The JSON Schema of each built-in value type, in every document the gateway serves.
SCALARS: dict[str, dict[str, Any]] = {
    "text": {"type": "string"}, "number": {"type": "number"}, "integer": {"type": "integer"},
    "boolean": {"type": "boolean"}, "date": {"type": "string", "format": "date-time"},
    "object": {"type": "object"}, "geographic_address": GEOGRAPHIC_ADDRESS,
    "file": {"type": "string", "description": "The file's URL. A write may also send Bubble's "
             "object form {filename, contents: base64, private}, or a multipart file part "
             "to a workflow"},
    "image": {"type": "string", "description": "The image's URL (PNG, JPEG, GIF or WebP). A "
              "write may also send Bubble's object form {filename, contents: base64, "
              "private}, or a multipart file part to a workflow"},
}
_ERRORS = {
    400: "ERROR (Unrecognized field: X), INVALID_DATA or INVALID_BODY",
    401: "UNAUTHORIZED: a credential that is not valid, or a write the privacy rules do not "
         "grant",
    404: "NOT_FOUND (an unknown type or constraint type) or MISSING_DATA (no such record)",
}


def data_paths(registry: Registry, prefix: str = "") -> dict[str, Any]:
    """The path items of every exposed data type, by path."""
    paths: dict[str, Any] = {}
    for url, name in sorted(registry.data_api.items()):
        spec = registry.data_types[name]
        base = f"{prefix}{PREFIX}/{url}"
        display = registry.settings.data_api_display_keys
        record, fields = record_schema(spec, display), fields_schema(spec, display)
        paths[base] = {"get": _search(spec, record), "post": _operation(
            spec, f"Create a {name}", {201: _json(_created())}, _body(fields))}
        paths[f"{base}/bulk"] = {"post": _operation(
            spec, f"Create up to {MAX_BULK} {name} records, one JSON object per line",
            {200: {"description": "One result line per item",
                   "content": {"text/plain": {"schema": {"type": "string"}}}}},
            {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}})}
        id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths[f"{base}/{{id}}"] = {
            "get": _operation(spec, f"A {name} by id",
                              {200: _json({"type": "object",
                                           "properties": {"response": record}})}, params=id),
            "patch": _operation(spec, f"Change fields of a {name}", {204: _empty()},
                                _body(fields), id),
            "put": _operation(spec, f"Replace a {name} (fields not given are cleared)",
                              {204: _empty()}, _body(fields), id),
            "delete": _operation(spec, f"Delete a {name}", {204: _empty()}, params=id),
        }
    return paths


def _operation(spec: TypeSpec, summary: str, responses: dict[int, Any],
               body: dict[str, Any] | None = None,
               params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [TAG], "summary": summary, "responses": {
        **{str(status): answer for status, answer in responses.items()},
        **{str(status): {"description": text} for status, text in _ERRORS.items()}}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _search(spec: TypeSpec, record: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "string"}
    params = [
        {"name": "constraints", "in": "query", "schema": text,
         "description": "A JSON array of {key, constraint_type, value}; constraint types: "
                        + ", ".join(CONSTRAINT_TYPES)},
        {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
        {"name": "sort_field", "in": "query", "schema": text},
        {"name": "descending", "in": "query", "schema": {"type": "boolean"}},
        {"name": "additional_sort_fields", "in": "query", "schema": text,
         "description": "A JSON array of {sort_field, descending}"},
        {"name": "exclude_remaining", "in": "query", "schema": {"type": "boolean"}},
    ]
    page = {"type": "object", "properties": {"response": {"type": "object", "properties": {
        "cursor": {"type": "integer"}, "count": {"type": "integer"},
        "remaining": {"type": "integer"}, "results": {"type": "array", "items": record}}}}}
    return _operation(spec, f"Search {spec.name} records", {200: _json(page)}, params=params)


def _field(field: FieldSpec) -> dict[str, Any]:
    one = SCALARS.get(field.type, {"type": "string", "description": f"a {field.type} id"})
    if field.options is not None:  # by display, as Bubble's Data API has them
        one = {"type": "string", "enum": [o.display for o in field.options.options],
               "description": f"an option of {field.options.name}, by its display"}
        if field.list:
            return {"type": "array", "items": one, "uniqueItems": True}
    return {"type": "array", "items": one} if field.list else one


def fields_schema(spec: TypeSpec, display: bool = False) -> dict[str, Any]:
    """A body of field values of `spec` (no field it does not declare), keyed by their
    displays with `display` (the settings' `data_api: {display_keys: true}`)."""
    return {"type": "object", "additionalProperties": False,
            "properties": {f.key if display else name: _field(f)
                           for name, f in spec.fields.items()}}


def record_schema(spec: TypeSpec, display: bool = False) -> dict[str, Any]:
    """A record as the Data API shows it: Bubble's system fields, then its own."""
    fields = fields_schema(spec, display)
    text = {"type": "string"}
    date = SCALARS["date"]
    return {"type": "object", "properties": {
        "_id": text, "Created Date": date, "Modified Date": date, "Created By": text,
        **fields["properties"]}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Success", "content": {"application/json": {"schema": schema}}}


def _created() -> dict[str, Any]:
    return {"type": "object", "properties": {"status": {"const": "success"},
                                             "id": {"type": "string"}}}


def _empty() -> dict[str, Any]:
    return {"description": "Done (no body)"}
