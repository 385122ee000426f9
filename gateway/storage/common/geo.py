"""Geographic addresses and the `geographic_search` constraint, as both backends see them.

A geographic address is stored as the JSON object Bubble's Data API sends and returns:
`{"address": text, "lat": degrees, "lng": degrees}`. A search within a range of an origin
compiles to a bounding box on the indexed `lat` and `lng` (which the index can seek) and
then the exact great-circle distance (haversine, on a sphere of the Earth's mean radius):
the box holds every point within the range, so the box only saves work, and the distance
alone decides what matches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import ValidationError

GEOGRAPHIC_ADDRESS = "geographic_address"
EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
KM_PER_MILE = 1.609344
MAX_ADDRESS_CHARS = 1000  # the longest address text a value may hold
MAX_RANGE_KM = 1_000_000.0  # a larger range is refused; half the globe already holds all
HALF_CIRCUMFERENCE_KM = math.pi * EARTH_RADIUS_KM
UNITS = {"miles": KM_PER_MILE, "mile": KM_PER_MILE, "mi": KM_PER_MILE,
         "km": 1.0, "kilometers": 1.0, "kilometres": 1.0}
_KEYS = frozenset({"address", "lat", "lng"})
_PAD = 1e-9  # degrees added around the box, for rounding: the distance decides anyway


def _degrees(value: Any, name: str, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number) or not -bound <= number <= bound:
        raise ValueError(f"{name} must be a number from {-bound:g} to {bound:g}")
    return number


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("address must be text")
    if len(value) > MAX_ADDRESS_CHARS:
        raise ValueError(f"address must be at most {MAX_ADDRESS_CHARS} characters")
    return value.strip()


def address_value(value: Any) -> dict[str, Any]:
    """A geographic address as stored: `{address, lat, lng}`. Text, or an object with only
    an address, is an address still to be located (`lat` and `lng` None: `located` is
    false); raises `ValueError` for anything else."""
    if isinstance(value, str):
        value = {"address": value}
    if not isinstance(value, dict) or not set(value) <= _KEYS:
        raise ValueError("a geographic address is an object of address, lat and lng")
    address = _address(value.get("address", ""))
    lat, lng = value.get("lat"), value.get("lng")
    if lat is None and lng is None:
        if not address:
            raise ValueError("a geographic address needs an address, or lat and lng")
        return {"address": address, "lat": None, "lng": None}
    return {"address": address, "lat": _degrees(lat, "lat", 90),
            "lng": _degrees(lng, "lng", 180)}


def located(value: Any) -> bool:
    return isinstance(value, dict) and value.get("lat") is not None


@dataclass(frozen=True, slots=True)
class Near:
    """A `geographic_search` value: within `km` of the origin (`lat`, `lng`), or of
    `address` while it is not yet located."""

    km: float
    lat: float | None = None
    lng: float | None = None
    address: str | None = None


def near_value(value: Any) -> Near:
    """Bubble's `{range, unit, origin_address}` (or `origin`: an address, or an object with
    lat and lng) as a `Near`; `ValidationError` for anything else. The unit is miles unless
    it says km."""
    if isinstance(value, Near):
        return value
    if not isinstance(value, dict):
        raise ValidationError("geographic_search takes {range, unit, origin_address} or "
                              "{range, unit, origin: {lat, lng}}")
    unit = value.get("unit", "miles")
    if not isinstance(unit, str) or unit.lower() not in UNITS:
        raise ValidationError("the unit of a geographic_search is miles or km")
    try:
        distance = _degrees(value.get("range"), "range", MAX_RANGE_KM)
    except ValueError as exc:
        raise ValidationError(f"the {exc} (of a geographic_search)") from exc
    if distance < 0:
        raise ValidationError("the range of a geographic_search cannot be negative")
    km = distance * UNITS[unit.lower()]
    origin = value.get("origin", value.get("origin_address"))
    try:
        place = address_value(origin)
    except ValueError as exc:
        raise ValidationError(f"the origin of a geographic_search: {exc}") from exc
    if located(place):
        return Near(km, place["lat"], place["lng"])
    return Near(km, address=place["address"])


def distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """The great-circle distance (haversine), in kilometres."""
    dlat = math.radians(lat2 - lat1)
    dlng = math.radians(lng2 - lng1)
    a = (math.sin(dlat / 2) ** 2
         + math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * math.sin(dlng / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def sql_distance_km(lat1: Any, lng1: Any, lat2: Any, lng2: Any) -> float | None:
    """`distance_km` as SQLite calls it: NULL when a coordinate is not a number."""
    coordinates = (lat1, lng1, lat2, lng2)
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coordinates):
        return None
    return distance_km(float(lat1), float(lng1), float(lat2), float(lng2))


@dataclass(frozen=True, slots=True)
class Box:
    """The latitudes and longitudes that hold every point within a range of an origin.
    `lng_ranges` is empty when every longitude may (near a pole, or a range that large);
    two ranges when the box crosses the antimeridian."""

    lat_min: float
    lat_max: float
    lng_ranges: tuple[tuple[float, float], ...]


def box(lat: float, lng: float, km: float) -> Box:
    angle = km / EARTH_RADIUS_KM  # the range as an angle at the centre of the Earth
    dlat = math.degrees(angle) + _PAD
    lat_min, lat_max = lat - dlat, lat + dlat
    if lat_min <= -90 or lat_max >= 90 or angle >= math.pi / 2:
        return Box(max(lat_min, -90.0), min(lat_max, 90.0), ())
    ratio = math.sin(angle) / math.cos(math.radians(lat))
    if ratio >= 1:
        return Box(lat_min, lat_max, ())
    dlng = math.degrees(math.asin(ratio)) + _PAD
    low, high = lng - dlng, lng + dlng
    if low < -180:
        return Box(lat_min, lat_max, ((low + 360, 180.0), (-180.0, high)))
    if high > 180:
        return Box(lat_min, lat_max, ((low, 180.0), (-180.0, high - 360)))
    return Box(lat_min, lat_max, ((low, high),))
