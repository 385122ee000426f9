"""How a run's outcome reads to a caller, whatever carries it (an HTTP response, `gateway
run`): the status, the JSON envelope and the headers. No web framework here.

Success: `{"status": "success", "response": {...}}`. Every error, in one shape:
`{"statusCode": N, "body": {"status": CODE, "message": ...}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.encoding import encode
from gateway.core.errors import GatewayError, MethodNotAllowedError, RateLimitedError
from gateway.core.errors import public_error as public_error  # where callers import it from
from gateway.runtime.context import Reply
from gateway.runtime.interpreter import RunResult

JSON = "application/json"
_SUCCESS = b'{"status":"success","response":'  # as `encode` writes the envelope


@dataclass(frozen=True, slots=True)
class Rendered:
    """A status, a body and its media type, and headers."""

    status: int
    body: bytes | str
    media_type: str | None = JSON
    headers: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return self.body if isinstance(self.body, str) else self.body.decode("utf-8", "replace")


def render_error(error: GatewayError, run_id: str | None = None) -> Rendered:
    body: dict[str, Any] = {"status": error.code, "message": error.message}
    headers = {}
    if run_id is not None:
        headers["X-Run-Id"] = run_id
        if error.status >= 500:  # the caller's handle on what the run log knows
            body.update(run_id=run_id, message=f"{error.message} (run {run_id})")
    if isinstance(error, MethodNotAllowedError) and error.allow:
        headers["Allow"] = error.allow
    if isinstance(error, RateLimitedError):
        headers["Retry-After"] = str(error.retry_after)
    return Rendered(error.status, encode({"statusCode": error.status, "body": body}), JSON,
                    headers)


def render_result(result: RunResult) -> Rendered:
    if result.error is not None:
        if result.redirect is not None:  # `error_redirect`: the error rides in the URL
            return Rendered(result.redirect.status, b"", None,
                            {**result.redirect.headers, "X-Run-Id": result.run_id})
        return render_error(public_error(result.error), result.run_id or None)
    reply = result.reply or Reply(data={})
    headers = {**reply.headers, "X-Run-Id": result.run_id}
    if reply.text is not None:
        return Rendered(reply.status, reply.text, reply.content_type, headers)
    encoded = result.encoded  # the data's JSON, when the run wrote it already
    if reply.content_type and reply.content_type != JSON:
        content = reply.data if isinstance(reply.data, str) else encode(reply.data)
        return Rendered(reply.status, content, reply.content_type, headers)
    if encoded is not None and reply.data is not None:
        return Rendered(reply.status, _SUCCESS + encoded + b"}", JSON, headers)
    data = reply.data if reply.data is not None else {}
    return Rendered(reply.status, encode({"status": "success", "response": data}), JSON, headers)
