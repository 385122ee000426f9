"""The Swagger 2.0 description of the exposed workflows and Data API types, in the form Bubble
serves at `/api/1.1/meta/swagger.json`: the base path is the API's root (`{prefix}/api/1.1`),
paths are relative to it (`/wf/<name>`, `/obj/<type>`), operations are tagged `Workflow` or
`Data`, and the credential is the `api_token` query parameter or an `Authorization: Bearer`
header. Clients generated from Bubble's file keep working against it.

Swagger 2.0 says less than OpenAPI 3.1 (`gateway.api.openapi`, at `openapi.json`): a POST
body is described as JSON only (the endpoints also read urlencoded and multipart bodies),
and an answer that may be a success or an error has no schema.
"""

from __future__ import annotations

from typing import Any

from gateway.api.data_openapi import SCALARS
from gateway.api.data_swagger import data_definitions, data_paths
from gateway.api.openapi import errors_of, is_required, object_schema
from gateway.runtime.model import Param, Registry, Workflow

PATH = "/api/1.1/meta/swagger.json"
BASE = "/api/1.1"
WORKFLOW_TAG = "Workflow"
DATA_TAG = "Data"
JSON = "application/json"
# The credential, as Bubble's file declares it, and the header Bubble also reads.
SECURITY_DEFINITIONS = {
    "api_token": {"type": "apiKey", "in": "query", "name": "api_token",
                  "description": "An admin API key or a user's token, as a query parameter "
                                 "(kept out of the logs)."},
    "bearer": {"type": "apiKey", "in": "header", "name": "Authorization",
               "description": "`Bearer <token>`: an admin API key or a user's token."},
}
_CREDENTIALS: list[dict[str, list[str]]] = [{"api_token": []}, {"bearer": []}]


def document(registry: Registry, *, title: str = "workflow gateway",
             version: str = "1") -> dict[str, Any]:
    """The Swagger 2.0 document of the registry's exposed workflows and Data API types."""
    paths: dict[str, Any] = {f"/wf/{wf.name}": {wf.method.lower(): operation(wf)}
                             for wf in registry.exposed()}
    taken = {wf.name for wf in registry.exposed()}
    paths.update(data_paths(registry, taken))
    return {
        "swagger": "2.0",
        "info": {"title": title, "version": version,
                 "description": "The exposed workflows of this gateway (Bubble's Workflow "
                                "API) and its Data API. OpenAPI 3.1: openapi.json."},
        "basePath": registry.settings.prefix + BASE,
        "consumes": [JSON],
        "produces": [JSON],
        "tags": [{"name": WORKFLOW_TAG, "description": "The exposed API workflows"},
                 {"name": DATA_TAG, "description": "The data types of the Data API"}],
        "securityDefinitions": SECURITY_DEFINITIONS,
        "security": _CREDENTIALS,
        "paths": paths,
        "definitions": {**_definitions(), **data_definitions(registry)},
    }


def operation(wf: Workflow) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [WORKFLOW_TAG], "operationId": wf.name,
                          "summary": wf.label or wf.name, "description": f"Access: {wf.auth}.",
                          "responses": _responses(wf)}
    if wf.auth == "none":  # public: no credential needed, an invalid one still refused
        op["security"] = [{}, *_CREDENTIALS]
    query = [p for p in wf.params if p.in_query or wf.method == "GET"]
    parameters = [_query_parameter(p) for p in query]
    body = [p for p in wf.params if p not in query]
    if wf.method == "POST":
        schema = object_schema(body)
        parameters.append({"name": "body", "in": "body", "required": "required" in schema,
                           "schema": schema})
    if parameters:
        op["parameters"] = parameters
    produces = sorted({shape.content_type for shape in wf.replies
                       if shape.content_type not in (None, "*/*", JSON)})
    if produces:
        op["produces"] = [JSON, *produces]
    return op


def _query_parameter(param: Param) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": param.name, "in": "query",
                            "required": is_required(param), **_query_type(param)}
    if param.list:
        spec = {"name": param.name, "in": "query", "required": is_required(param),
                "type": "array", "items": _query_type(param), "collectionFormat": "multi"}
    if param.has_default and param.default is not None and not param.list \
            and param.type != "object":
        spec["default"] = param.default
    return spec


def _query_type(param: Param) -> dict[str, Any]:
    """A query parameter's type: Swagger 2.0 has no object in the query (a JSON text)."""
    if param.type == "object":
        return {"type": "string", "description": "A JSON object"}
    item = dict(SCALARS.get(param.type, {"type": "string"}))
    if (param.type in ("text", "date") or param.is_record) and not param.has_default:
        item["minLength"] = 1  # an empty text is no value (a default may be one)
    return item


def _responses(wf: Workflow) -> dict[str, Any]:
    errors = errors_of(wf)
    run_id = {"X-Run-Id": {"type": "string", "description": "The run's id"}}
    responses: dict[str, Any] = {"200": {
        "description": "The run's returned data", "headers": run_id,
        **({} if wf.return_200_if_condition_fails else {"schema": _ref("Success")})}}
    dynamic = False
    for shape in wf.replies:
        if shape.status is None or shape.content_type == "*/*":
            dynamic = True
            continue
        text = errors.pop(shape.status, None)
        responses.setdefault(str(shape.status), {
            "description": "An answer a step sets" + (f"; or {text}" if text else ""),
            "headers": run_id})
    for status, text in sorted(errors.items()):
        responses.setdefault(str(status), {"description": text, "schema": _ref("Error")})
    if dynamic:
        responses["default"] = {"description": "A status or content type a step decides at "
                                               "run time"}
    return responses


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _definitions() -> dict[str, Any]:
    return {
        "Success": {"type": "object", "required": ["status", "response"], "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "response": {"type": "object"}}},
        "Error": {"type": "object", "required": ["statusCode", "body"], "properties": {
            "statusCode": {"type": "integer"},
            "body": {"type": "object", "required": ["status", "message"], "properties": {
                "status": {"type": "string", "description": "A stable error code."},
                "message": {"type": "string"},
                "run_id": {"type": "string"}}}}},
    }
