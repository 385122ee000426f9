"""Geographic addresses on SQLite and PostgreSQL, through the served app: written and read
as Bubble's Data API has them, located by a real Nominatim-shaped server on loopback,
searched with `geographic_search` (checked against the haversine computed here), refused
when hostile, and kept behind the privacy rules."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import Serve

from gateway.api.auth import key_hash, new_key
from gateway.storage import Storage

PLACES = {"Paris": ("48.8566", "2.3522"), "Auckland": ("-36.8485", "174.7633")}


@pytest.fixture(scope="module")
def nominatim() -> Iterator[str]:
    """A Nominatim-shaped search API on loopback: known places, no result, an error, and
    an answer that is not JSON."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            q = query.get("q", [""])[0]
            status, body = 200, b"[]"
            if q in PLACES:
                lat, lon = PLACES[q]
                body = json.dumps([{"lat": lat, "lon": lon, "display_name": q}]).encode()
            elif q == "Broken":
                status = 500
            elif q == "Garbage":
                body = b"<html>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/search"
    server.shutdown()
    server.server_close()


CONFIG = """
kind: settings
geocoder: {{url: "{url}", timeout: 2s}}
---
kind: data_type
name: place
api: {{expose: true}}
fields:
  name: {{type: text}}
  where: {{type: geographic_address}}
---
kind: data_type
name: shop
api: {{expose: true}}
fields:
  name: {{type: text}}
  where: {{type: geographic_address}}
everyone_else: {{find_in_searches: true, view_fields: [name]}}
---
kind: api_workflow
name: near
expose: true
auth: none
params: {{origin: {{type: geographic_address}}, km: {{type: number}}}}
steps:
  - id: found
    action: search
    type: place
    constraints:
      - key: where
        constraint: geographic_search
        value: {{range: "{{{{ params.km }}}}", unit: km, origin: "{{{{ params.origin }}}}"}}
  - action: return_data
    data: {{names: "{{{{ steps.found.results | map(attribute='name') | list }}}}"}}
---
kind: api_workflow
name: near-shop
expose: true
auth: none
params: {{lat: {{type: number}}, lng: {{type: number}}}}
steps:
  - id: found
    action: search
    type: shop
    constraints:
      - key: where
        constraint: geographic_search
        value:
          range: 1
          unit: km
          origin: {{lat: "{{{{ params.lat }}}}", lng: "{{{{ params.lng }}}}"}}
  - action: return_data
    data: {{count: "{{{{ steps.found.count }}}}"}}
"""


@dataclass
class Api:
    client: httpx.AsyncClient
    storage: Storage
    admin: dict[str, str]

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.admin)

    async def search(self, constraints: list[dict[str, Any]],
                     type: str = "place") -> httpx.Response:
        return await self.client.get(f"/api/1.1/obj/{type}", headers=self.admin, params={
            "constraints": json.dumps(constraints), "limit": 100})

    async def names(self, value: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        cursor = 0
        while True:
            answer = await self.client.get("/api/1.1/obj/place", headers=self.admin, params={
                "constraints": json.dumps([{"key": "where", "constraint_type":
                                            "geographic_search", "value": value}]),
                "limit": 100, "cursor": cursor})
            assert answer.status_code == 200, answer.text
            page = answer.json()["response"]
            found |= {r["name"] for r in page["results"]}
            cursor += page["count"]
            if not page["remaining"]:
                return found

    async def count(self, type: str = "place") -> int:
        return (await self.storage.records.search(type, [], [], 1, None)).count


@pytest.fixture
async def api(serve: Serve, storage_url: str, nominatim: str) -> AsyncIterator[Api]:
    async with serve(CONFIG.format(url=nominatim), storage_url) as gateway:
        assert gateway.storage is not None
        key = new_key()
        await gateway.storage.keys.create_key("admin", key_hash(key), datetime.now(UTC))
        yield Api(gateway.client, gateway.storage, {"Authorization": f"Bearer {key}"})


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Written here again, not imported: the test checks the store against it."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


async def test_written_and_read_as_bubble_sends_them(api: Api) -> None:
    where = {"address": "1 Main St", "lat": 40.5, "lng": -73.25}
    answer = await api.post("/api/1.1/obj/place", {"name": "a", "where": where})
    assert answer.status_code == 201, answer.text
    got = await api.client.get(f"/api/1.1/obj/place/{answer.json()['id']}", headers=api.admin)
    assert got.json()["response"]["where"] == where
    located = await api.post("/api/1.1/obj/place", {"name": "b", "where": {"address": "Paris"}})
    got = await api.client.get(f"/api/1.1/obj/place/{located.json()['id']}", headers=api.admin)
    assert got.json()["response"]["where"] == {"address": "Paris", "lat": 48.8566,
                                               "lng": 2.3522}
    as_text = await api.post("/api/1.1/obj/place", {"name": "c", "where": "Auckland"})
    got = await api.client.get(f"/api/1.1/obj/place/{as_text.json()['id']}", headers=api.admin)
    assert got.json()["response"]["where"]["lat"] == -36.8485


# Origins that test the geometry: mid-latitudes, both poles, across the antimeridian.
ORIGINS = [(45.0, 5.0), (89.9, 0.0), (-90.0, 0.0), (10.0, 179.95), (-20.0, -179.9), (0.0, 0.0)]


async def test_geographic_search_is_exact(api: Api) -> None:
    rng = random.Random(7)
    points = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(150)]
    for lat, lng in ORIGINS:  # points near each origin, some within range and some not
        for _ in range(25):
            points.append((max(-90.0, min(90.0, lat + rng.uniform(-3, 3))),
                           (lng + rng.uniform(-6, 6) + 540) % 360 - 180))
    points.append(ORIGINS[0])  # exactly at an origin: range 0 finds it
    for index, (lat, lng) in enumerate(points):
        await api.storage.records.create("place", {
            "name": str(index), "where": {"address": f"p{index}", "lat": lat, "lng": lng}})
    await api.storage.records.create("place", {"name": "nowhere"})  # no address at all
    for lat, lng in ORIGINS:
        for km in (0, 50, 250, 1000, 30000):
            expected = {str(i) for i, (a, b) in enumerate(points)
                        if haversine_km(lat, lng, a, b) <= km}
            origin = {"lat": lat, "lng": lng}
            assert await api.names({"range": km, "unit": "km", "origin": origin}) == expected, \
                (lat, lng, km)
    miles = {str(i) for i, (a, b) in enumerate(points)
             if haversine_km(45.0, 5.0, a, b) <= 100 * 1.609344}
    assert await api.names({"range": 100, "origin": {"lat": 45.0, "lng": 5.0}}) == miles


async def test_origin_located_by_the_geocoder(api: Api) -> None:
    await api.storage.records.create("place", {
        "name": "louvre", "where": {"address": "Louvre", "lat": 48.8606, "lng": 2.3376}})
    await api.storage.records.create("place", {
        "name": "lyon", "where": {"address": "Lyon", "lat": 45.764, "lng": 4.8357}})
    found = await api.names({"range": 10, "unit": "km", "origin_address": "Paris"})
    assert found == {"louvre"}
    run = await api.client.post("/api/1.1/wf/near", json={"origin": "Paris", "km": 500})
    assert run.status_code == 200, run.text
    assert sorted(run.json()["response"]["names"]) == ["louvre", "lyon"]


@pytest.mark.parametrize(("address", "status", "code"), [
    ("Nowhere", 400, "INVALID_DATA"), ("Broken", 502, "UPSTREAM_ERROR"),
    ("Garbage", 502, "UPSTREAM_ERROR")])
async def test_geocoder_failures_store_nothing(api: Api, address: str, status: int,
                                               code: str) -> None:
    answer = await api.post("/api/1.1/obj/place", {"name": "x", "where": {"address": address}})
    assert answer.status_code == status, answer.text
    assert answer.json()["body"]["status"] == code
    assert await api.count() == 0
    search = await api.search([{"key": "where", "constraint_type": "geographic_search",
                                "value": {"range": 5, "origin_address": address}}])
    assert search.status_code == status, search.text


HOSTILE: list[Any] = [
    {"address": "x", "lat": 90.0001, "lng": 0}, {"address": "x", "lat": 0, "lng": -180.5},
    {"address": "x", "lat": "48.1", "lng": "2.3"}, {"address": "x", "lat": True, "lng": 0},
    {"address": "x", "lat": 1e300, "lng": 0}, {"address": "x", "lat": 10},
    {"address": "x" * 100_000}, {"address": 5}, {"address": "x", "lat": 1, "lng": 2, "z": 3},
    [], 12, {"lat": None, "lng": None}, {},
]


@pytest.mark.parametrize("where", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_addresses_are_refused(api: Api, where: Any) -> None:
    answer = await api.post("/api/1.1/obj/place", {"name": "x", "where": where})
    assert answer.status_code == 400, answer.text
    assert answer.json()["body"]["status"] in ("INVALID_DATA", "INVALID_BODY")
    assert await api.count() == 0


async def test_nan_and_a_megabyte_address_are_refused(api: Api) -> None:
    for number in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = b'{"name": "x", "where": {"address": "x", "lat": %s, "lng": 0}}' % number
        answer = await api.client.post("/api/1.1/obj/place", content=body, headers={
            **api.admin, "Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, answer.text
    huge = await api.post("/api/1.1/obj/place", {"name": "x", "where": "x" * 1_048_576})
    assert 400 <= huge.status_code < 500
    assert await api.count() == 0


@pytest.mark.parametrize("value", [
    {"range": -1, "origin": {"lat": 0, "lng": 0}}, {"range": "far", "origin": "Paris"},
    {"range": 1, "unit": "parsecs", "origin": "Paris"}, {"range": 1},
    {"range": 1, "origin": {"lat": 91, "lng": 0}}, "Paris", {"range": 1e9, "origin": "Paris"}])
async def test_hostile_searches_are_refused(api: Api, value: Any) -> None:
    answer = await api.search([{"key": "where", "constraint_type": "geographic_search",
                                "value": value}])
    assert answer.status_code == 400, answer.text


async def test_other_tests_do_not_apply_to_an_address(api: Api) -> None:
    equals = await api.search([{"key": "where", "constraint_type": "equals", "value": "x"}])
    assert equals.status_code == 400
    on_text = await api.search([{"key": "name", "constraint_type": "geographic_search",
                                 "value": {"range": 1, "origin": {"lat": 0, "lng": 0}}}])
    assert on_text.status_code == 400


async def test_hidden_coordinates_cannot_be_searched(api: Api) -> None:
    """A shop's address is hidden from everyone else: a search on it finds nothing, so
    that ranges cannot be narrowed down to its coordinates."""
    await api.storage.records.create("shop", {
        "name": "hidden", "where": {"address": "x", "lat": 12.5, "lng": 7.25}})
    admin = await api.search([{"key": "where", "constraint_type": "geographic_search",
                               "value": {"range": 1, "unit": "km",
                                         "origin": {"lat": 12.5, "lng": 7.25}}}], "shop")
    assert admin.json()["response"]["count"] == 1
    anonymous = await api.client.post("/api/1.1/wf/near-shop", json={"lat": 12.5, "lng": 7.25})
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json()["response"]["count"] == 0
