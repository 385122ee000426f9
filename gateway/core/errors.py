"""The error hierarchy and the `Diagnostic` record.

Runtime errors carry their HTTP status and stable code as class attributes; the HTTP layer
renders every one of them in a single place. Config problems are `Diagnostic`s, collected
and reported all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem in a config file, located to the line and column (both 1-based)."""

    file: str
    line: int
    column: int
    code: str
    message: str
    pointer: str = ""
    severity: str = "error"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "pointer": self.pointer,
        }


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or nothing."""
    close = get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def shown(text: str, limit: int = 64) -> str:
    """Caller text fit for a message or a log line: cut to `limit` characters, with control
    and other unprintable characters escaped."""
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return cut + "…" if len(text) > limit else cut


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status: int = 500
    code: str = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(GatewayError):
    """The config has problems; `diagnostics` lists every one of them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__(f"{len(self.diagnostics)} problem(s) in the config")


# --- Errors a caller causes (4xx) -------------------------------------------------------------


class NotFoundError(GatewayError):
    """An unknown or unexposed workflow (one answer for both, so names do not leak), a
    record a step names that does not exist, an unknown Data API type or constraint type."""

    status, code = 404, "NOT_FOUND"


class MethodNotAllowedError(GatewayError):
    """The route exists but not for this method; the answer carries `Allow`."""

    status, code = 405, "METHOD_NOT_ALLOWED"

    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class MissingDataError(GatewayError):
    """A required parameter is missing (or sent as an empty text)."""

    status, code = 400, "MISSING_DATA"


class InvalidDataError(GatewayError):
    """A value that does not fit: a parameter of the wrong type, an unknown record id, a
    bad date, delay or address given to a step, a missing idempotency key."""

    status, code = 400, "INVALID_DATA"


class DataApiError(GatewayError):
    """A Data API refusal, with the status and code Bubble answers it with."""

    def __init__(self, message: str, status: int = 400, code: str = "ERROR") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RefusedError(DataApiError):
    """A Data API write (create, modify, delete) that the privacy rules, or the caller's access
    level, do not grant: 401 `UNAUTHORIZED`, answered with Bubble's body for it
    (`{"error_class": "Unauthorized", "args": {"code": ...}, "message": ..., "translation":
    ...}`). The message names the permission, never what the rules hide."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 401, "UNAUTHORIZED")


class MalformedBodyError(GatewayError):
    """A request body that is not valid JSON, or not a JSON object."""

    status, code = 400, "INVALID_BODY"


class PayloadTooLargeError(GatewayError):
    """A request body over `limits.max_body_bytes`."""

    status, code = 413, "PAYLOAD_TOO_LARGE"


class RequestTimeoutError(GatewayError):
    """The client took longer than allowed to send its request (its headers or its body)."""

    status, code = 408, "REQUEST_TIMEOUT"


class HeadersTooLargeError(GatewayError):
    """A request line and headers over `server.max_header_bytes`; the connection is closed."""

    status, code = 431, "HEADERS_TOO_LARGE"


class TooManyConnectionsError(GatewayError):
    """A connection past `server.max_connections_per_address`: answered and closed."""

    status, code = 503, "TOO_MANY_CONNECTIONS"


class UnauthorizedError(GatewayError):
    """No credential where the workflow needs one, or a credential that is not valid
    (unknown, revoked, expired) on any workflow; a Data API write no privacy rule grants."""

    status, code = 401, "UNAUTHORIZED"


class ForbiddenError(GatewayError):
    """A user's token on an `auth: admin` workflow."""

    status, code = 403, "FORBIDDEN"


# --- Webhooks: signatures, idempotent replays, rate limits, outbound calls ------------------


class InvalidSignatureError(GatewayError):
    """A `verify:` workflow got a request its secret did not sign (or signed too long ago)."""

    status, code = 401, "INVALID_SIGNATURE"


class InProgressError(GatewayError):
    """A repeated idempotency key while the first request with it is still running."""

    status, code = 409, "IN_PROGRESS"


class KeyTakenError(InProgressError):
    """An idempotent run whose key another request took over while it ran (its lease had
    ended): what it wrote is rolled back, and its answer is not the key's."""


class RateLimitedError(GatewayError):
    """More requests than the workflow's `rate_limit` allows; `retry_after` in seconds."""

    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """An `http_request` or `send_email` step failed after its retries (the run's 502)."""

    status, code = 502, "UPSTREAM_ERROR"


class UsedEmailError(GatewayError):
    """A sign-up, or a change of e-mail, to an address another user has."""

    status, code = 400, "USED_EMAIL"


class PasswordTooShortError(GatewayError):
    """A password shorter than `tokens.min_password_length`."""

    status, code = 400, "PASSWORD_TOO_SHORT"


class InvalidLoginError(GatewayError):
    """A wrong password and an unknown e-mail are one error, with one message."""

    status, code = 400, "INVALID_LOGIN_CREDENTIALS"


class InvalidResetTokenError(GatewayError):
    """A password reset token unknown, used already, expired or another user's: one error,
    with one message."""

    status, code = 400, "INVALID_RESET_TOKEN"


class NotRunError(GatewayError):
    """The workflow's `only_when` was false; status is 400, or 200 when the workflow asks."""

    code = "NOT_RUN"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- Errors raised while a run is under way ---------------------------------------------------


class RunError(GatewayError):
    """A step failed. `location` is the step's `file:line`, for the log, never the caller."""

    status, code = 500, "ERROR"

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class ResponseTooLargeError(RunError):
    """A reply larger than `limits.max_response_bytes`: the run fails, and says so."""

    code = "RESPONSE_TOO_LARGE"


class RedirectRefusedError(RunError):
    """A redirect to a target `redirects.allowed` does not list (or no well-formed URL):
    nothing is redirected, the run fails with this code."""

    code = "REDIRECT_NOT_ALLOWED"


class RedirectTooLongError(RedirectRefusedError):
    """A redirect whose URL, with its query parameters, is longer than
    `redirects.max_url_length`."""

    code = "REDIRECT_TOO_LONG"


class TemplateError(RunError):
    """A template failed at run time (an undefined name, a sandbox refusal, a bad filter)."""


class StepFailedError(GatewayError):
    """A `fail` step: ends the run with the status, code and message the workflow chose."""

    def __init__(self, message: str, status: int = 400, code: str = "FAILED") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TooManyJobsError(GatewayError):
    """A run would leave more jobs pending than `limits.max_pending_jobs` allow, or, for one
    workflow, `limits.max_pending_jobs_per_workflow`: it fails, and nothing it did is kept."""

    status, code = 503, "TOO_MANY_JOBS"


class LeaseLostError(GatewayError):
    """A job's run ended after its lease had expired and another claim took the job: what
    the run wrote is rolled back, and the job's newer claim runs it."""

    status, code = 409, "LEASE_LOST"


# --- Storage ----------------------------------------------------------------------------------


class StorageError(GatewayError):
    """The database failed; driver exceptions are chained to it (`raise ... from exc`)."""

    status, code = 500, "ERROR"


class DuplicateError(StorageError):
    """A `unique` field already holds this value in another record."""

    status, code = 409, "DUPLICATE"

    def __init__(self, message: str, type_name: str = "", field: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.field = field


class StorageUnavailableError(StorageError):
    """The database cannot serve right now (unreachable, out of space, its writer gone):
    nothing the caller sent is at fault, and the same call may succeed later."""

    status, code = 503, "UNAVAILABLE"


class RecordNotFoundError(StorageError):
    """A record a step names (by id) that does not exist."""

    status, code = 404, "NOT_FOUND"


class ValidationError(StorageError):
    """A value does not fit its field's declared type."""

    status, code = 400, "INVALID_DATA"


def run_status(error: GatewayError | None) -> str:
    """How the run log names a run's outcome: `success`, `not_run` (its condition was false),
    `rejected` (the caller's mistake) or `failed`."""
    if error is None:
        return "success"
    if isinstance(error, NotRunError):
        return "not_run"
    if error.status < 500 and not isinstance(error, (StepFailedError, DuplicateError,
                                                     LeaseLostError)):
        return "rejected"
    return "failed"


def public_error(error: GatewayError) -> GatewayError:
    """A 5xx never shows its cause to the caller: the run log and the server log have it."""
    if error.status >= 500 and error.code == "ERROR":
        return GatewayError("The workflow failed; see the run log for details")
    return error
