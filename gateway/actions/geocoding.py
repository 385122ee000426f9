"""Locating geographic addresses: the geocoder of the settings (`geocoder:`), a
Nominatim-compatible search API, called through the process's HTTP client (so
`http.block_private_addresses` applies to it as to any call out).

A value that holds only an address (a field being written, or the origin of a
`geographic_search`) is located before anything is stored or searched: the first place the
geocoder answers gives its `lat` and `lng`. No geocoder configured, or no place found: 400
`INVALID_DATA`. The geocoder down, slow, answering an error or something that is not a
place: 502 `UPSTREAM_ERROR`. Either way nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.core.errors import RunError, UpstreamError, ValidationError
from gateway.core.redaction import cut_to
from gateway.runtime.context import RunContext
from gateway.storage.common.geo import GEOGRAPHIC_ADDRESS, Near, address_value, located
from gateway.storage.contract import Constraint, TypeSpec

if TYPE_CHECKING:  # imported where a call is made: see gateway.runtime.http_client
    import httpx

MAX_ANSWER_BYTES = 1_048_576  # the most of a geocoder's answer that is read


async def locate(ctx: RunContext, address: str) -> tuple[float, float]:
    """(lat, lng) of the first place the geocoder finds for `address`."""
    url = ctx.settings.geocoder_url
    if url is None:
        raise ValidationError(
            f"the geographic address {_shown(address)} has no lat and lng, and no geocoder "
            "is configured to locate it (settings: geocoder)")
    client = ctx.services.http
    if client is None:
        raise RunError("outbound HTTP is not available in this process")
    answer = await _ask(client, url, address, ctx.settings.geocoder_timeout.total_seconds())
    if not isinstance(answer, list):
        raise UpstreamError("the geocoder's answer is not a list of places")
    if not answer:
        raise ValidationError(f"the geocoder found no place for the address {_shown(address)}")
    first = answer[0]
    try:
        place = address_value({"address": address, "lat": float(first["lat"]),
                               "lng": float(first["lon"])})
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError("the geocoder's answer is not a place with lat and lon") from exc
    return place["lat"], place["lng"]


async def _ask(client: httpx.AsyncClient, url: str, address: str, timeout: float) -> Any:
    import httpx  # loaded by the first call out (see gateway.runtime.http_client)

    params = {"q": address, "format": "jsonv2", "limit": "1"}
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, params=params, timeout=timeout) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise UpstreamError("the geocoder's answer is too large")
                    chunks.append(chunk)
    except (httpx.HTTPError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, httpx.TimeoutException | TimeoutError) else \
            "could not be reached"
        raise UpstreamError(f"the geocoder {why}") from exc
    if response.status_code != 200:
        raise UpstreamError(f"the geocoder answered {response.status_code}")
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise UpstreamError("the geocoder's answer is not JSON") from exc


def _shown(address: str) -> str:
    return repr(cut_to(address, 100))


async def located_fields(ctx: RunContext, spec: TypeSpec,
                         fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` (already checked) with every geographic address located."""
    result = dict(fields)
    for key, value in fields.items():
        field = spec.fields.get(key)
        if field is None or field.type != GEOGRAPHIC_ADDRESS or value is None:
            continue
        if field.list:
            result[key] = [await _located(ctx, item) for item in value]
        else:
            result[key] = await _located(ctx, value)
    return result


async def _located(ctx: RunContext, value: dict[str, Any]) -> dict[str, Any]:
    if located(value):
        return value
    lat, lng = await locate(ctx, value["address"])
    return {"address": value["address"], "lat": lat, "lng": lng}


async def located_constraints(ctx: RunContext,
                              constraints: Sequence[Constraint]) -> list[Constraint]:
    """`constraints` with the origin of every `geographic_search` located."""
    result = []
    for c in constraints:
        if isinstance(c.value, Near) and c.value.lat is None and c.value.address is not None:
            lat, lng = await locate(ctx, c.value.address)
            c = Constraint(c.key, c.constraint, Near(c.value.km, lat, lng))
        result.append(c)
    return result
