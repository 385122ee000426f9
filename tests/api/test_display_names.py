"""Types and fields with a display name (`Rental Unit`, `First Name`) used as Bubble uses
it, on SQLite and PostgreSQL: the Data API's URL, and, when the settings ask for display
keys, the Data API's keys and those of records a workflow returns. Templates keep using the
fields' names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.core.clock import utc_now

TYPES = """
kind: data_type
name: rental_unit
display: Rental Unit
api: {expose: true}
fields:
  first_name: {type: text, display: First Name}
  rent: {type: number}
  owner_email: {type: text, display: "Owner's e-mail"}
---
kind: data_type
name: lead_source
api: {expose: true}
fields:
  label: {type: text, display: Label Shown}
---
kind: api_workflow
name: add-unit
expose: true
auth: none
params: {first: {type: text}, rent: {type: number}}
steps:
  - id: unit
    action: create_thing
    type: rental_unit
    fields: {first_name: "{{ params.first }}", rent: "{{ params.rent }}"}
  - id: found
    action: search
    type: rental_unit
    constraints: [{key: first_name, constraint: equals, value: "{{ params.first }}"}]
  - action: return_data
    data:
      unit: "{{ steps.unit }}"
      units: "{{ steps.found.results }}"
      first: "{{ steps.unit.first_name }}"
      plain: {first_name: "{{ steps.unit.first_name }}"}
"""
DISPLAY_KEYS = """
---
kind: settings
data_api: {display_keys: true}
workflow_api: {display_keys: true}
"""


@asynccontextmanager
async def client(serve: Serve, config: str, storage_url: str
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with serve(config, storage_url) as gw:
        assert gw.storage is not None
        key = new_key()
        await gw.storage.keys.create_key(f"admin {key[:8]}", key_hash(key), utc_now())
        yield gw.client, {"Authorization": f"Bearer {key}"}


def fields_of(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items()
            if k not in ("_id", "Created Date", "Modified Date", "Created By")}


async def test_a_display_is_the_types_url_and_names_key_fields_by_default(
        serve: Serve, storage_url: str) -> None:
    async with client(serve, TYPES, storage_url) as (http, admin):
        created = await http.post("/api/1.1/obj/rentalunit", headers=admin,
                                  json={"first_name": "Ada", "rent": 900})
        assert created.status_code == 201, created.text
        got = await http.get(f"/api/1.1/obj/rentalunit/{created.json()['id']}", headers=admin)
        assert fields_of(got.json()["response"]) == {"first_name": "Ada", "rent": 900}
        refused = await http.post("/api/1.1/obj/rentalunit", headers=admin,
                                  json={"First Name": "Ada"})
        assert refused.status_code == 400
        assert "First Name" in refused.json()["body"]["message"]
        for path in ("rental_unit", "rentalUnit", "Rental%20Unit", "rentalunits"):
            assert (await http.get(f"/api/1.1/obj/{path}", headers=admin)).status_code == 404
        # a type without a display answers at its name made Bubble's way, as before
        assert (await http.get("/api/1.1/obj/leadsource", headers=admin)).status_code == 200


async def test_display_keys_on_the_data_api(serve: Serve, storage_url: str) -> None:
    async with client(serve, TYPES + DISPLAY_KEYS, storage_url) as (http, admin):
        for first, rent in (("Ada", 900), ("Bob", 700)):
            created = await http.post("/api/1.1/obj/rentalunit", headers=admin,
                                      json={"First Name": first, "rent": rent,
                                            "Owner's e-mail": f"{first}@example.com"})
            assert created.status_code == 201, created.text
        found = await http.get("/api/1.1/obj/rentalunit", headers=admin, params={
            "constraints": json.dumps([{"key": "First Name", "constraint_type": "equals",
                                        "value": "Bob"}])})
        assert found.status_code == 200, found.text
        [bob] = found.json()["response"]["results"]
        assert fields_of(bob) == {"First Name": "Bob", "rent": 700,
                                  "Owner's e-mail": "Bob@example.com"}
        ordered = await http.get("/api/1.1/obj/rentalunit", headers=admin,
                                 params={"sort_field": "First Name", "descending": "true"})
        assert [r["First Name"] for r in ordered.json()["response"]["results"]] == ["Bob", "Ada"]
        changed = await http.patch(f"/api/1.1/obj/rentalunit/{bob['_id']}", headers=admin,
                                   json={"First Name": "Bobby"})
        assert changed.status_code == 204, changed.text
        got = await http.get(f"/api/1.1/obj/rentalunit/{bob['_id']}", headers=admin)
        assert got.json()["response"]["First Name"] == "Bobby"
        # the field's name is not its key any more, on the way in as on the way out
        for body in ({"first_name": "Eve"}, {"first name": "Eve"}, {"FirstName": "Eve"}):
            refused = await http.post("/api/1.1/obj/rentalunit", headers=admin, json=body)
            assert refused.status_code == 400, body
        bad_sort = await http.get("/api/1.1/obj/rentalunit", headers=admin,
                                  params={"sort_field": "first_name"})
        assert bad_sort.status_code == 400


async def test_records_a_workflow_returns_use_display_keys(serve: Serve,
                                                           storage_url: str) -> None:
    async with client(serve, TYPES + DISPLAY_KEYS, storage_url) as (http, _):
        answer = await http.post("/api/1.1/wf/add-unit", json={"first": "Ada", "rent": 900})
        assert answer.status_code == 200, answer.text
        data = answer.json()["response"]
        assert data["unit"]["First Name"] == "Ada"
        assert "first_name" not in data["unit"]
        assert data["unit"]["rent"] == 900
        assert [unit["First Name"] for unit in data["units"]] == ["Ada"]
        assert data["first"] == "Ada"  # templates read the field by its name
        assert data["plain"] == {"first_name": "Ada"}  # not a record: left as written


async def test_records_a_workflow_returns_keep_names_by_default(serve: Serve,
                                                                storage_url: str) -> None:
    async with client(serve, TYPES, storage_url) as (http, _):
        answer = await http.post("/api/1.1/wf/add-unit", json={"first": "Ada", "rent": 900})
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"]["unit"]["first_name"] == "Ada"
        assert "First Name" not in answer.json()["response"]["unit"]


async def test_the_api_documents_use_the_keys_the_data_api_uses(serve: Serve,
                                                                 storage_url: str) -> None:
    by_name = {"first_name", "rent", "owner_email"}
    by_display = {"First Name", "rent", "Owner's e-mail"}
    for config, keys in ((TYPES, by_name), (TYPES + DISPLAY_KEYS, by_display)):
        async with client(serve, config, storage_url) as (http, admin):
            openapi = (await http.get("/api/1.1/meta/openapi.json", headers=admin)).json()
            swagger = (await http.get("/api/1.1/meta/swagger.json", headers=admin)).json()
        body = openapi["paths"]["/api/1.1/obj/rentalunit"]["post"]["requestBody"]
        assert set(body["content"]["application/json"]["schema"]["properties"]) == keys
        record = swagger["definitions"]["rentalunit"]["properties"]
        assert keys <= set(record) and not (by_name | by_display) - keys & set(record)


LONG = "x" * 100  # the longest display a field may have
SIZED = """
kind: data_type
name: note
fields:
""" + "".join(f"  f{n}: {{type: text, display: {LONG[:-1]}{n}}}\n" for n in range(4)) + """
---
kind: api_workflow
name: add-note
expose: true
auth: none
steps:
  - id: note
    action: create_thing
    type: note
    fields: {f0: a, f1: b, f2: c, f3: d}
  - action: return_data
    data: {note: "{{ steps.note }}"}
"""


async def test_the_size_limit_measures_the_reply_with_display_keys(serve: Serve,
                                                                   storage_url: str) -> None:
    # Under the limit with the fields' names (some 220 bytes), over it with their displays
    # (some 600): the reply measured is the one sent.
    limit = "limits: {max_response_bytes: 400}\n"
    async with client(serve, SIZED + "---\nkind: settings\n" + limit, storage_url) as (http, _):
        named = await http.post("/api/1.1/wf/add-note", json={})
        assert named.status_code == 200, named.text
        assert "f0" in named.json()["response"]["note"]
    async with client(serve, SIZED + DISPLAY_KEYS + limit, storage_url) as (http, _):
        keyed = await http.post("/api/1.1/wf/add-note", json={})
    body = keyed.json()["body"]
    assert (keyed.status_code, body["status"]) == (500, "RESPONSE_TOO_LARGE"), keyed.text
    assert "400 bytes" in body["message"] and "limits.max_response_bytes" in body["message"]
