"""Swagger 2.0 at `/api/1.1/meta/swagger.json` (Bubble's form, checked by a Swagger 2.0
validator), the listing at `/api/1.1/meta`, who may read them, and `gateway openapi
--format`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import Serve
from openapi_spec_validator import OpenAPIV2SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from support import WORKFLOWS_D

from gateway.api import meta, openapi, swagger
from gateway.api.auth import key_hash, new_key
from gateway.cli import main
from gateway.compiler.loader import load

CONFIG = """\
kind: data_type
name: lead
api: {expose: true}
fields:
  name: {type: text}
  score: {type: number}
  tags: {type: text, list: true}
  owner: {type: user}
---
kind: data_type
name: hidden_note          # not exposed: in no document
fields: {body: {type: text}}
---
kind: api_workflow
name: typed
expose: true
auth: none
params:
  text: {type: text}
  number: {type: number, optional: true, default: 1.5}
  object: {type: object, optional: true}
  texts: {type: text, list: true, optional: true}
  lead: {type: lead, optional: true}
  source: {type: text, in: query, optional: true, default: ""}
  flags: {type: boolean, in: query, list: true, optional: true}
  extra: {type: object, in: query, optional: true}
steps:
  - action: fail
    only_when: "{{ params.text == 'teapot' }}"
    status: 418
    code: TEAPOT
    message: short and stout
  - action: return_data
    data: {text: "{{ params.text }}"}
---
kind: api_workflow
name: search_lead          # the name of a Data API operation id: kept apart
expose: true
auth: admin
method: GET
params: {q: {type: text}}
steps:
  - action: return_data
    data: {q: "{{ params.q }}"}
---
kind: api_workflow
name: internal             # not exposed
auth: admin
steps:
  - action: return_data
    data: {}
---
kind: api_workflow
name: signup
expose: true
auth: none
params: {email: {type: text}}
steps:
  - {action: signup_user, email: "{{ params.email }}", password: correct horse battery}
"""


def test_the_document_is_valid_swagger_2_in_bubbles_form(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(CONFIG)
    doc = swagger.document(load([tmp_path]))
    validate(doc, cls=OpenAPIV2SpecValidator)  # raises on any departure from Swagger 2.0
    assert doc["swagger"] == "2.0" and doc["basePath"] == "/api/1.1"
    assert [tag["name"] for tag in doc["tags"]] == ["Workflow", "Data"]
    assert doc["securityDefinitions"]["api_token"] == {
        **doc["securityDefinitions"]["api_token"], "type": "apiKey", "in": "query",
        "name": "api_token"}
    assert doc["securityDefinitions"]["bearer"]["in"] == "header"
    assert set(doc["paths"]) == {"/wf/typed", "/wf/search_lead", "/wf/signup", "/obj/lead",
                                 "/obj/lead/bulk", "/obj/lead/{id}"}
    typed = doc["paths"]["/wf/typed"]["post"]
    assert typed["tags"] == ["Workflow"] and typed["security"][0] == {}
    query = {p["name"]: p for p in typed["parameters"] if p["in"] == "query"}
    assert query["flags"]["type"] == "array" and query["flags"]["collectionFormat"] == "multi"
    assert query["extra"]["type"] == "string"  # no object in a Swagger 2.0 query
    body = next(p for p in typed["parameters"] if p["in"] == "body")
    assert body["schema"]["required"] == ["text"]
    assert body["schema"]["properties"]["lead"]["type"] == "string"
    assert {"200", "400", "401", "418", "500"} <= set(typed["responses"])
    thing = doc["paths"]["/obj/lead/{id}"]
    assert set(thing) == {"parameters", "get", "patch", "put", "delete"}
    assert all(op["tags"] == ["Data"] for path, item in doc["paths"].items()
               if path.startswith("/obj/") for key, op in item.items() if key != "parameters")
    ids = [op["operationId"] for item in doc["paths"].values()
           for key, op in item.items() if key != "parameters"]
    assert len(ids) == len(set(ids)) and "search_lead" in ids and "obj_search_lead" in ids
    assert doc["definitions"]["lead"]["properties"]["tags"]["type"] == "array"


OPTIONS_AND_PLACES = """\
kind: option_set
name: status
attributes: {color: text}
options:
  - {value: open, display: Open, attributes: {color: green}}
  - {value: closed, display: Closed, attributes: {color: grey}}
---
kind: data_type
name: shop
api: {expose: true}
fields:
  status: {type: status}
  place: {type: geographic_address}
---
kind: api_workflow
name: visit
expose: true
auth: none
params:
  status: {type: status}
  statuses: {type: status, list: true, optional: true}
  place: {type: geographic_address, optional: true}
steps:
  - action: return_data
    data: {status: "{{ params.status }}"}
"""


def test_option_sets_and_addresses_are_described_in_swagger_2(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(OPTIONS_AND_PLACES)
    doc = swagger.document(load([tmp_path]))
    validate(doc, cls=OpenAPIV2SpecValidator)
    body = next(p for p in doc["paths"]["/wf/visit"]["post"]["parameters"] if p["in"] == "body")
    fields = body["schema"]["properties"]
    assert fields["status"]["enum"] == ["open", "closed", "Open", "Closed"]
    assert fields["statuses"]["items"]["enum"] == ["open", "closed", "Open", "Closed"]
    assert fields["place"]["type"] == "object"
    assert set(fields["place"]["properties"]) == {"address", "lat", "lng"}
    shop = doc["definitions"]["shop"]["properties"]
    assert shop["status"]["enum"] == ["Open", "Closed"]  # the Data API's: by display
    assert shop["place"]["properties"]["lat"]["maximum"] == 90


def test_the_validator_refuses_a_broken_document(tmp_path: Path) -> None:
    """The check above can fail: the validator knows Swagger 2.0 from OpenAPI 3.1."""
    (tmp_path / "main.yaml").write_text(CONFIG)
    registry = load([tmp_path])
    with pytest.raises(OpenAPIValidationError):
        validate(openapi.document(registry), cls=OpenAPIV2SpecValidator)
    broken = swagger.document(registry)
    broken["paths"]["/wf/typed"]["post"]["parameters"][0]["in"] = "cookie"
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV2SpecValidator)


def test_the_shipped_examples_make_a_valid_document() -> None:
    validate(swagger.document(load([WORKFLOWS_D])), cls=OpenAPIV2SpecValidator)


@pytest.fixture
async def gateway(serve: Serve, storage_url: str
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]]:
    """A client, an admin key's header and a user's, on each database."""
    async with serve(CONFIG, storage_url) as served:
        key = new_key()
        await served.storage.keys.create_key("swagger", key_hash(key), datetime.now(UTC))
        signed = await served.client.post("/api/1.1/wf/signup", json={"email": "u@x.io"})
        token = signed.json()["response"]["token"]
        yield (served.client, {"Authorization": f"Bearer {key}"},
               {"Authorization": f"Bearer {token}"})


DOCUMENTS = (swagger.PATH, openapi.PATH, meta.PATH)


async def test_the_documents_are_for_admin_keys(
        gateway: tuple[httpx.AsyncClient, dict[str, str], dict[str, str]],
        tmp_path: Path) -> None:
    client, admin, user = gateway
    for path in DOCUMENTS:
        anonymous = await client.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.json()["body"]["status"] == "UNAUTHORIZED"
        assert (await client.get(path, headers=user)).status_code == 403
        assert (await client.get(path, params={"api_token": "x" * 40})).status_code == 401
        assert (await client.get(path, headers=admin)).status_code == 200
    served = (await client.get(swagger.PATH, headers=admin)).json()
    validate(served, cls=OpenAPIV2SpecValidator)
    assert (await client.get(openapi.PATH, headers=admin)).json()["openapi"] == "3.1.0"
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "main.yaml").write_text(CONFIG)
    for form, path in (("swagger2", swagger.PATH), ("openapi3", openapi.PATH)):
        printed = CliRunner().invoke(main, ["openapi", "--format", form, str(folder)])
        assert printed.exit_code == 0, printed.output
        served = (await client.get(path, headers=admin)).json()
        assert json.loads(printed.output) == {**served, "info": {
            **served["info"], "version": json.loads(printed.output)["info"]["version"]}}
    default = CliRunner().invoke(main, ["openapi", str(folder)])
    assert json.loads(default.output)["openapi"] == "3.1.0"  # the default: OpenAPI 3.1
    wrong = CliRunner().invoke(main, ["openapi", "--format", "swagger3", str(folder)])
    assert wrong.exit_code == 2


async def test_meta_lists_the_exposed_types_and_workflows(
        gateway: tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]) -> None:
    client, admin, _ = gateway
    listing = (await client.get(meta.PATH, headers=admin)).json()
    assert listing["get"] == listing["post"] == listing["delete"] == ["lead"]
    assert listing["types"]["lead"]["url"] == "/api/1.1/obj/lead"
    assert listing["types"]["lead"]["fields"]["tags"] == {"type": "text", "list": True}
    assert set(listing["workflows"]) == {"typed", "search_lead", "signup"}
    assert listing["workflows"]["search_lead"]["method"] == "GET"
    assert listing["workflows"]["typed"]["params"]["text"]["optional"] is False
    assert listing["documents"] == {"swagger": swagger.PATH, "openapi": openapi.PATH}
    assert "hidden_note" not in json.dumps(listing) and "internal" not in json.dumps(listing)


async def test_other_methods_and_odd_paths_on_meta_are_clear_4xx(
        gateway: tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]) -> None:
    client, admin, _ = gateway
    for path in DOCUMENTS:
        head = await client.head(path)
        assert head.status_code == 401 and head.content == b""
        assert (await client.head(path, headers=admin)).status_code == 200
        for method in ("OPTIONS", "POST", "DELETE"):
            answer = await client.request(method, path, headers=admin)
            assert answer.status_code == 405, (method, path)
            assert answer.json()["body"]["status"] == "METHOD_NOT_ALLOWED"
    for odd in ("/api/1.1/meta/", "/api/1.1/meta/swagger.json/", "/api/1.1/meta//swagger.json",
                "/api/1.1/meta/swagger.yaml", "/api/1.1/meta/%2e%2e/meta/swagger.json"):
        answer = await client.get(odd, headers=admin)
        assert answer.status_code == 404, (odd, answer.status_code)
        assert answer.json()["body"]["status"] == "NOT_FOUND"


async def test_openapi_public_opens_every_document(serve: Serve) -> None:
    async with serve("kind: settings\nopenapi: {public: true}\n---\n" + CONFIG) as served:
        for path in DOCUMENTS:
            assert (await served.client.get(path)).status_code == 200, path
