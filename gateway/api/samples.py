"""Bubble's "detect request data" for a workflow not written yet: while a detection window
is open for a name (`gateway detect --start NAME`), the first POST to
`/api/1.1/wf/NAME/initialize` is kept as the window's sample (its parameters, and its
headers when the window asked for them) and closes it; `gateway detect --from-last NAME`
prints the parameters as YAML.

Only a window's first request is kept: any other, and any request refused (a method, a
body, a key), gets what it would get with no window open (for a name no exposed workflow
has, the 404 of an unknown workflow), so the endpoint says nothing of which names are being
detected. A workflow that exists and is not `auth: none` still needs an admin key.
"""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from gateway.api.auth import API_TOKEN, Authenticator, credential
from gateway.api.detection import detect
from gateway.api.request_bodies import parse_body, read_body
from gateway.core.encoding import dumps, encode
from gateway.core.errors import MethodNotAllowedError, NotFoundError, shown
from gateway.runtime.coercion import gather
from gateway.runtime.envelope import Rendered
from gateway.runtime.interpreter import Interpreter
from gateway.runtime.model import Workflow
from gateway.storage.contract import Detection

# Headers never kept in a sample: credentials.
UNKEPT_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
MAX_HEADERS = 100  # of a sample, kept at most


def unknown(name: str) -> NotFoundError:
    return NotFoundError(f"No workflow named {shown(name)} is exposed")


async def open_window(interpreter: Interpreter, name: str) -> Detection | None:
    """The detection window open for `name` now, if any."""
    storage = interpreter.storage
    if storage is None:
        return None
    window = await storage.detections.find_detection(name)
    return window if window is not None and window.open_at(interpreter.clock()) else None


async def keep_sample(request: Request, interpreter: Interpreter, auth: Authenticator,
                      window: Detection, workflow: Workflow | None) -> Rendered:
    """The request as the window's sample, if it is the first; raises `GatewayError` for a
    request refused (a wrong method, a missing admin key, a body over the limit)."""
    name = window.name
    if request.method != "POST":
        raise MethodNotAllowedError(f"{name}/initialize only accepts POST", "POST")
    if workflow is not None and workflow.auth != "none":
        await auth.admit(dataclasses.replace(workflow, auth="admin"), credential(request))
    settings = interpreter.registry.settings
    raw = await parse_body(request, await read_body(request, settings.max_body_bytes))
    raw.update({k: v for k, v in gather(request.query_params.multi_items()).items()
                if k != API_TOKEN})
    sample: dict[str, object] = {"params": raw}
    if window.headers:
        sample["headers"] = {k: v for k, v in list(request.headers.items())[:MAX_HEADERS]
                             if k not in UNKEPT_HEADERS}
    assert interpreter.storage is not None
    if not await interpreter.storage.detections.take_sample(name, dumps(sample),
                                                            interpreter.clock()):
        raise unknown(name)  # another request was first
    params, _, _ = detect(raw)
    return Rendered(200, encode({"status": "success",
                                 "response": {"detected": sorted(params)}}))
