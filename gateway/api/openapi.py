"""The OpenAPI 3.1 description of the exposed workflows: each workflow's parameters (types,
required, defaults; a JSON, urlencoded or multipart body for POST, the query string for GET),
its success envelope, every error envelope it can answer with, and the security schemes.

What is documented is what the endpoints send (a test fuzzes the document against the app):
a status or content type decided by a template at run time is documented as `default`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.api.data_openapi import SCALARS, data_paths
from gateway.runtime.model import ROUTE_PREFIX, Param, Registry, Workflow

PATH = "/api/1.1/meta/openapi.json"  # Swagger 2.0 is at `swagger.PATH`, as on Bubble
JSON = "application/json"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")

_OUTBOUND = frozenset({"http_request", "send_email"})  # steps that call other systems
# The errors every endpoint can answer with, and when.
_ALWAYS = {
    400: "MISSING_DATA, INVALID_DATA or INVALID_BODY: a parameter missing or of the wrong "
         "type, a body that cannot be read; NOT_RUN: the workflow's condition is false",
    401: "UNAUTHORIZED: no credential where one is needed, or one that is not valid",
    500: "ERROR: the run failed (the body carries the run id); RESPONSE_TOO_LARGE",
    503: "UNAVAILABLE: the database cannot serve; try again later",
}


def document(registry: Registry, *, title: str = "workflow gateway",
             version: str = "1") -> dict[str, Any]:
    """The OpenAPI document of the registry's exposed workflows."""
    prefix = registry.settings.prefix
    paths = {f"{prefix}{ROUTE_PREFIX}/{wf.name}": {wf.method.lower(): operation(wf)}
             for wf in registry.exposed()}
    paths.update(data_paths(registry, prefix))  # the Data API's exposed types
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "The exposed workflows of this gateway (Bubble's Workflow "
                                "API URLs and envelopes), and its Data API."},
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "An admin API key or a user's token."},
            "api_token": {"type": "apiKey", "in": "query", "name": "api_token",
                          "description": "The same credential as a query parameter, for "
                                         "Bubble's callers."}}},
    }


def operation(wf: Workflow) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": wf.name, "summary": wf.label or wf.name,
        "description": f"Access: {wf.auth}.",
        "responses": _responses(wf),
    }
    # Every call may carry a credential: an invalid one is refused (401) even on public ones.
    op["security"] = ([{}] if wf.auth == "none" else []) + [{"bearer": []}, {"api_token": []}]
    query = [p for p in wf.params if p.in_query or wf.method == "GET"]
    if query:
        op["parameters"] = [_query_parameter(p) for p in query]
    body = [p for p in wf.params if p not in query]
    if wf.method == "POST":
        schema = object_schema(body)
        op["requestBody"] = {
            "required": bool(schema.get("required")),
            "content": {JSON: {"schema": schema}, **{form: {"schema": schema} for form in FORMS}},
        }
    return op


def _query_parameter(param: Param) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": param.name, "in": "query", "required": is_required(param),
                            "schema": param_schema(param)}
    if param.list:
        spec.update(style="form", explode=True)
    return spec


def object_schema(params: Iterable[Param]) -> dict[str, Any]:
    params = list(params)
    schema: dict[str, Any] = {"type": "object",
                              "properties": {p.name: param_schema(p) for p in params}}
    required = [p.name for p in params if is_required(p)]
    if required:
        schema["required"] = required
    return schema


def is_required(param: Param) -> bool:
    return not param.optional and not param.has_default


def param_schema(param: Param) -> dict[str, Any]:
    item = dict(SCALARS.get(param.type, {"type": "string",
                                          "description": f"The id of a {param.type} record."}))
    if (param.type in ("text", "date") or param.is_record) and not param.has_default:
        item["minLength"] = 1  # an empty text is no value (a default may be one)
    if param.options is not None:
        names = [o.value for o in param.options.options]
        names += [o.display for o in param.options.options if o.display not in names]
        item = {"type": "string", "enum": names, "description":
                f"An option of the option set {param.options.name}, by value or display."}
    schema: dict[str, Any] = {"type": "array", "items": item} if param.list else item
    if param.list and param.options is not None:
        schema["uniqueItems"] = True
    if param.has_default and param.default is not None:
        schema["default"] = param.default
    return schema


def errors_of(wf: Workflow) -> dict[int, str]:
    """The error statuses a workflow can answer with, and what each means (both documents
    describe the same answers)."""
    errors: dict[int, str] = dict(_ALWAYS)
    if wf.auth == "admin":
        errors[403] = "FORBIDDEN: a user's token on a workflow for admin keys only"
    if wf.writes:
        errors[404] = "NOT_FOUND: a record a step changes does not exist"
        errors[409] = "DUPLICATE: a unique field already holds the value"
    if wf.method == "POST":
        errors[413] = "PAYLOAD_TOO_LARGE: a body over the size limit"
    errors.update(_around(wf))
    return errors


def _responses(wf: Workflow) -> dict[str, Any]:
    errors = errors_of(wf)
    responses: dict[str, Any] = {"200": _success(
        "The run's returned data" + (", or NOT_RUN when the condition is false"
                                     if wf.return_200_if_condition_fails else ""),
        errors_too=wf.return_200_if_condition_fails)}
    dynamic = False
    for shape in wf.replies:
        if shape.status is None or shape.content_type == "*/*":
            dynamic = True
            continue
        entry = responses.setdefault(str(shape.status), _custom(shape.status, errors))
        if shape.content_type is not None:
            entry["content"][shape.content_type] = {"schema": {"type": "string"}}
    for status, text in sorted(errors.items()):
        responses.setdefault(str(status), _error(text))
    if dynamic:
        responses["default"] = {"description": "A status or content type a step decides at "
                                               "run time",
                                "content": {"*/*": {"schema": {}}}}
    return responses


def _around(wf: Workflow) -> dict[int, str]:
    """What webhooks' checks and calls to other systems add to a workflow's answers."""
    errors: dict[int, str] = {}
    hooks = wf.hooks
    if hooks is not None and hooks.verify is not None:
        errors[401] = ("UNAUTHORIZED: a credential that is not valid; INVALID_SIGNATURE: the "
                       "sender's signature does not match the body")
    if hooks is not None and hooks.idempotency_key is not None:
        errors[409] = "IN_PROGRESS: a request with the same idempotency key is still running"
    if hooks is not None and hooks.rate_requests:
        errors[429] = "RATE_LIMITED: too many calls; Retry-After says when to try again"
    if any(step.action.name in _OUTBOUND for step in wf.steps):
        errors[502] = "UPSTREAM_ERROR: an HTTP API or the mail server the run calls failed"
    return errors


def _success(description: str, errors_too: bool = False) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Success"}
    schema = {"anyOf": [ref, {"$ref": "#/components/schemas/Error"}]} if errors_too else ref
    return {"description": description, "headers": _run_id(),
            "content": {JSON: {"schema": schema}}}


def _custom(status: int, errors: dict[int, str]) -> dict[str, Any]:
    text = errors.pop(status, None)
    described = "An answer a step sets" + (f"; or {text}" if text else "")
    return {"description": described, "headers": _run_id(), "content": {JSON: {"schema": {
        "anyOf": [{"$ref": "#/components/schemas/Success"},
                  {"$ref": "#/components/schemas/Error"}]}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _run_id() -> dict[str, Any]:
    return {"X-Run-Id": {"description": "The run's id, for `gateway runs show`.",
                         "schema": {"type": "string"}}}


def _schemas() -> dict[str, Any]:
    return {
        "Success": {"type": "object", "required": ["status", "response"],
                    "properties": {"status": {"const": "success"}, "response": {}}},
        "Error": {"type": "object", "required": ["statusCode", "body"], "properties": {
            "statusCode": {"type": "integer"},
            "body": {"type": "object", "required": ["status", "message"], "properties": {
                "status": {"type": "string", "description": "A stable error code."},
                "message": {"type": "string"},
                "run_id": {"type": "string"}}}}},
    }
