"""`gateway detect`: Bubble's "detect request data", from a sample file or from the first
request a webhook sender makes to a workflow not written yet."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from gateway.api.detection import as_yaml
from gateway.cli.group import Failed, config_option, database_option, main, store_of, with_store
from gateway.core.clock import utc_now
from gateway.core.encoding import escape, loads_exact
from gateway.core.settings import parse_duration
from gateway.runtime.model import ROUTE_PREFIX
from gateway.storage import Storage
from gateway.storage.contract import Detection

LONGEST_WINDOW = 7 * 24 * 3600  # seconds a detection window may stay open


@main.command()
@click.argument("sample", type=click.File("rb"), required=False)
@click.option("--start", "start", metavar="NAME", default=None,
              help="Open a detection window for workflow NAME: the first POST to "
                   ".../wf/NAME/initialize is kept as its sample.")
@click.option("--for", "lasting", default="15m", show_default=True, metavar="DURATION",
              help="How long the window stays open without a sample (at most 7d).")
@click.option("--headers", is_flag=True, help="Keep the sample's headers too (never its "
              "Authorization or Cookie).")
@click.option("--from-last", "from_last", metavar="NAME", default=None,
              help="Print the parameters of the sample the window of NAME kept.")
@config_option
@database_option
def detect(sample: Any, start: str | None, lasting: str, headers: bool,
           from_last: str | None, config: tuple[Path, ...], database: str | None) -> None:
    """Print the parameters detected from SAMPLE (a JSON object; - for standard input), as
    YAML to paste under a workflow's params:, as POST .../<name>/initialize does. Or, for a
    workflow not written yet, open a window for a webhook sender's first request
    (--start), then print what it sent (--from-last).

    \b
    Example:
      gateway detect sample.json
      gateway detect --start stripe-events --for 1h --headers
      gateway detect --from-last stripe-events
    """
    if sum(x is not None for x in (sample, start, from_last)) != 1:
        raise click.UsageError("give one of SAMPLE, --start NAME or --from-last NAME")
    if sample is not None:
        click.echo(as_yaml(_sample_file(sample)), nl=False)
        return
    registry, storage = store_of(config, database)
    if start is not None:
        until = _window(start, lasting)
        asyncio.run(with_store(storage, registry, lambda s: s.detections.open_detection(
            start, utc_now() + until, headers, utc_now()), sync_indexes=False))
        click.echo(f"detecting {escape(start)} for {lasting}: point the sender at "
                   f"POST {registry.settings.prefix}{ROUTE_PREFIX}/{escape(start)}/initialize")
        return
    assert from_last is not None
    found = asyncio.run(with_store(storage, registry, lambda s: _found(s, from_last),
                                   sync_indexes=False))
    click.echo(_printed(from_last, found), nl=False)


def _sample_file(sample: Any) -> dict[str, Any]:
    try:
        data = loads_exact(sample.read())  # as a request's body is read
    except ValueError as exc:
        raise Failed(f"error: {sample.name} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Failed(f"error: {sample.name} must hold a JSON object of parameter values")
    return data


def _window(name: str, lasting: str) -> Any:
    if not name or len(name) > 200 or not name.isprintable() or "/" in name:
        raise click.BadParameter("a workflow name", param_hint="--start")
    try:
        until = parse_duration(lasting)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from exc
    if not 0 < until.total_seconds() <= LONGEST_WINDOW:
        raise click.BadParameter("more than 0s and at most 7d", param_hint="--for")
    return until


async def _found(storage: Storage, name: str) -> Detection | None:
    return await storage.detections.find_detection(name)


def _printed(name: str, found: Detection | None) -> str:
    if found is None:
        raise Failed(f"error: no detection window was opened for {escape(name)} "
                     "(gateway detect --start NAME)")
    if found.sample is None:
        state = "is open until" if found.open_at(utc_now()) else "closed without one at"
        raise Failed(f"error: no request has reached {escape(name)}/initialize yet (the "
                     f"window {state} {found.until:%Y-%m-%d %H:%M:%S} UTC)")
    sample = json.loads(found.sample)
    text = as_yaml(sample.get("params") or {})
    seen = sample.get("headers")
    if seen:
        text += "# headers of the sample:\n" + "".join(
            f"#   {escape(str(k))}: {escape(str(v))}\n" for k, v in seen.items())
    return text
