"""The console's routes: every page and action behind a session, every response with the
same strict security headers, every form a POST with a CSRF token."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.auth import Authenticator
from gateway.api.request_bodies import read_body
from gateway.console import chart, jobs_page, overview_page, paging, runs_page, workflows_page
from gateway.console.session import COOKIE, PRE_COOKIE, Session, Signer, signing_key, throttle
from gateway.core.errors import GatewayError, RateLimitedError
from gateway.core.settings import Settings
from gateway.runtime.forwarded import network
from gateway.runtime.model import Registry
from gateway.scheduler.listing import key_use
from gateway.scheduler.replay import replay
from gateway.storage import JOB_STATUSES, Storage

HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
                               "style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
MAX_FORM = 16_384  # bytes of a console form
ASSETS = {"console.css": "text/css; charset=utf-8",
          "console.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"}
DONE = {"retry": "The job is pending again.", "cancel": "The job is cancelled.",
        "pause": "Paused: no job of it is claimed until it is resumed.",
        "resume": "Resumed: its jobs are claimed again.",
        "retry-from": "The job is pending again: the steps from the one chosen run again.",
        "not-retried": "Only a failed or cancelled job can be retried, and not while another "
                       "job holds its singleton or debounce key.",
        "bad-step": "Choose a step of the job's workflow to retry from.",
        "not-cancelled": "Only a pending job can be cancelled."}
Page = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gateway.console", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = lambda m: f"{m:%Y-%m-%d %H:%M:%S}" if isinstance(m, datetime) \
        else ("never" if m is None else str(m))
    env.filters["ms"] = lambda v: "-" if v is None else f"{v:,.2f} ms"
    env.filters["query"] = lambda d: urlencode(d)
    return env


class Console:
    """The console of one app: its signing key, its sign-in throttle and its routes. Made
    once per app; `configure` follows a reloaded config."""

    def __init__(self, settings: Settings) -> None:
        self.env = _environment()
        self.throttle = throttle()
        self.figures = overview_page.Figures()
        self.assets = {name: resources.files("gateway.console").joinpath(
            "static", name).read_bytes() for name in ASSETS}
        self._secret: str | None = None
        self.signer = Signer(signing_key(None))
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        secret = settings.secrets.get(settings.console_secret or "")
        if secret != self._secret:  # a new secret: sessions signed with the old one end
            self._secret = secret
            self.signer = Signer(signing_key(secret))
        self.lifetime = settings.console_session_lifetime.total_seconds()
        self.base = f"{settings.prefix}/console"

    def routes(self) -> list[BaseRoute]:
        guarded: list[tuple[str, Page, str]] = [
            ("", self.overview, "GET"), ("/workflows", self.workflows, "GET"),
            ("/runs", self.runs, "GET"), ("/runs/rows", self.run_rows, "GET"),
            ("/runs/{run_id}", self.run, "GET"), ("/jobs", self.jobs, "GET"),
            ("/jobs/{job_id}", self.job, "GET"),
            ("/jobs/{job_id}/retry", self.retry, "POST"),
            ("/jobs/{job_id}/cancel", self.cancel, "POST"),
            ("/pause", self.pause, "POST"), ("/resume", self.resume, "POST"),
            ("/sign-out", self.sign_out, "POST")]
        return [Route("/console/sign-in", self.sign_in, methods=["GET", "POST"],
                      name="console:sign-in"),
                Route("/console/static/{name}", self.asset, methods=["GET"],
                      name="console:static"),
                *(Route(f"/console{path}", self._guard(page), methods=[method],
                        name=f"console:{path or '/'}") for path, page, method in guarded)]

    # --- responses ----------------------------------------------------------------------

    def html(self, template: str, status: int = 200, **context: Any) -> Response:
        body = self.env.get_template(template).render(
            base=self.base, patterns=chart.PATTERNS, **context)
        return Response(body, status, HEADERS, "text/html; charset=utf-8")

    def redirect(self, path: str) -> Response:
        return Response(b"", 303, {**HEADERS, "location": self.base + path})

    def _cookie(self, response: Response, name: str, value: str, request: Request,
                max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=self.base, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")

    def form_page(self, request: Request, status: int, message: str = "",
                  next: str | None = None) -> Response:
        """The sign-in form: all a request without a session ever gets."""
        nonce = request.cookies.get(PRE_COOKIE, "")
        fresh = not (16 <= len(nonce) <= 64 and nonce.isascii() and nonce.isalnum())
        if fresh:
            nonce = secrets.token_hex(16)
        response = self.html("sign_in.html", status, csrf="",
                             token=self.signer.signin_token(nonce),
                             message=message,
                             next=self._next(request) if next is None else _safe(next))
        if fresh:
            self._cookie(response, PRE_COOKIE, nonce, request, 3600)
        return response

    def _next(self, request: Request) -> str:
        """Where to go after signing in: the page asked for (a console page), else home."""
        path = request.url.path
        if request.method == "GET" and path.startswith(self.base + "/") and "/static/" \
                not in path and not path.endswith("/sign-in") and not path.endswith("/rows"):
            return path[len(self.base):] + (f"?{request.url.query}" if request.url.query else "")
        return ""

    # --- sessions -----------------------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        session = self.signer.read(request.cookies.get(COOKIE))
        if session is None:
            return None
        auth: Authenticator = request.app.state.live.auth
        return session if await auth.admin_of_hash(session.key_hash) is not None else None

    async def form(self, request: Request) -> dict[str, str]:
        body = await read_body(request, MAX_FORM)
        fields: dict[str, str] = {}
        try:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                              max_num_fields=20)
        except ValueError:  # more fields than any console form has: no token either
            return fields
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields

    def _guard(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                session = await self.session(request)
                if session is None:
                    return self.form_page(request, 401)
                fields: dict[str, str] = {}
                if request.method == "POST":
                    fields = await self.form(request)
                    if not self.signer.check(self.signer.csrf(session.id), fields.get("csrf")):
                        return self.html("error.html", 403, csrf="", title="Refused",
                                         message="This form has no valid CSRF token: reload "
                                                 "the page and try again.")
                return await page(request, session, fields)
            except GatewayError as exc:
                return self.html("error.html", exc.status, csrf="", title="Error",
                                 message=exc.message)
        return endpoint

    async def sign_in(self, request: Request) -> Response:
        if request.method == "GET":
            if await self.session(request) is not None:
                return self.redirect("")
            return self.form_page(request, 200)
        try:
            fields = await self.form(request)
        except GatewayError as exc:
            return self.form_page(request, exc.status, exc.message)
        nonce = request.cookies.get(PRE_COOKIE, "")
        if not nonce or not self.signer.check(self.signer.signin_token(nonce),
                                              fields.get("token")):
            return self.form_page(request, 403, "The sign-in form expired; try again.",
                                  fields.get("next", ""))
        address = network(request.client.host if request.client else None)
        key = fields.get("key", "").strip()
        auth: Authenticator = request.app.state.live.auth
        try:  # slowed like log-ins, one at a time: guessing stays impractical
            async with self.throttle.turn(address) as turn:
                identity = await auth.identify(key) if key else None
                turn.ok = identity is not None and identity.kind == "admin"
        except RateLimitedError as exc:
            return self.form_page(request, exc.status, exc.message, fields.get("next", ""))
        if identity is None or identity.kind != "admin" or identity.token_hash is None:
            return self.form_page(request, 401, "That is not an admin API key of this "
                                                "gateway (or it was revoked).",
                                  fields.get("next", ""))
        _, cookie = self.signer.issue(identity.token_hash, self.lifetime)
        response = self.redirect(_safe(fields.get("next", "")))
        self._cookie(response, COOKIE, cookie, request, int(self.lifetime))
        return response

    async def sign_out(self, request: Request, session: Session,
                       fields: dict[str, str]) -> Response:
        self.signer.end(session)
        response = self.redirect("/sign-in")
        response.delete_cookie(COOKIE, path=self.base, httponly=True, samesite="strict")
        return response

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response(b"not found", 404, HEADERS, "text/plain")
        return Response(self.assets[name], 200, HEADERS, ASSETS[name])

    # --- pages --------------------------------------------------------------------------

    def _state(self, request: Request) -> tuple[Storage, Registry, datetime]:
        state = request.app.state
        storage: Storage | None = state.storage
        if storage is None:
            raise GatewayError("The console needs the gateway's database")
        return storage, state.live.registry, state.clock()

    def _page(self, template: str, session: Session, status: int = 200,
              **context: Any) -> Response:
        return self.html(template, status, csrf=self.signer.csrf(session.id), **context)

    async def overview(self, request: Request, session: Session,
                       fields: dict[str, str]) -> Response:
        storage, _, now = self._state(request)
        return self._page("overview.html", session, nav="overview", now=now,
                          **await overview_page.overview(storage, self.figures, now))

    async def workflows(self, request: Request, session: Session,
                        fields: dict[str, str]) -> Response:
        storage, registry, now = self._state(request)
        entries = await workflows_page.workflows(storage, self.figures, registry, now)
        return self._page("workflows.html", session, nav="workflows", now=now, entries=entries)

    async def _runs(self, request: Request) -> dict[str, Any]:
        storage, registry, now = self._state(request)
        filters = runs_page.run_filters(request.query_params, now)
        labels = {n: w.label for n, w in registry.workflows.items() if w.label}
        rows, older = await runs_page.runs(storage, filters, labels)
        names = sorted({*registry.workflows, *registry.events, *registry.recurring,
                        *registry.triggers})
        return {"filters": filters, "rows": rows, "older": older, "names": names,
                "statuses": runs_page.RUN_STATUSES, "sources": runs_page.SOURCES, "now": now,
                "scan": f"{runs_page.SEARCH_SCAN:,}"}

    async def runs(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        return self._page("runs.html", session, nav="runs", **await self._runs(request))

    async def run_rows(self, request: Request, session: Session,
                       fields: dict[str, str]) -> Response:
        return self._page("run_rows.html", session, **await self._runs(request))

    async def run(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        storage, registry, now = self._state(request)
        run_id = request.path_params["run_id"]
        found = await storage.runs.get_run(run_id) if len(run_id) <= 200 else None
        if found is None:
            return self._page("error.html", session, nav="runs", title="No such run",
                              message=f"No run has the id {run_id[:200]}.",
                              status=404)
        return self._page("run.html", session, nav="runs", **runs_page.run_detail(
            found, registry.settings.tracing_ui_url))

    async def jobs(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        storage, registry, now = self._state(request)
        filters = jobs_page.job_filters(request.query_params)
        found, older = await jobs_page.jobs(storage, filters)
        hidden: frozenset[str] = request.app.state.interpreter.hidden
        return self._page("jobs.html", session, nav="jobs", filters=filters,
                          jobs=jobs_page.job_rows(
                              found, hidden, registry,
                              await key_use(storage.jobs, found, now), now),
                          older=older, statuses=JOB_STATUSES, now=now,
                          paused=sorted(await storage.jobs.paused()),
                          names=sorted({*registry.workflows, *registry.recurring,
                                        *registry.triggers}),
                          done=DONE.get(request.query_params.get("done", ""), ""))

    async def job(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        storage, registry, _ = self._state(request)
        job_id = request.path_params["job_id"]
        found = await storage.jobs.get_job(job_id) if len(job_id) <= 200 else None
        if found is None:
            return self._page("error.html", session, nav="jobs", title="No such job",
                              message=f"No job has the id {job_id[:200]}.",
                              status=404)
        hidden: frozenset[str] = request.app.state.interpreter.hidden
        return self._page("job.html", session, nav="jobs",
                          done=DONE.get(request.query_params.get("done", ""), ""),
                          attempts=await jobs_page.job_runs(storage, found),
                          steps=jobs_page.job_steps(registry, found),
                          checkpoints=await jobs_page.job_checkpoints(storage, found),
                          **jobs_page.job_detail(found, hidden, registry))

    async def retry(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        """Retry a failed or cancelled job: resuming at the failed step (the form's
        default, and the jobs list's button), or from the step the form chose (`from_step`:
        its checkpoints and those of the steps after it are forgotten)."""
        storage, _, now = self._state(request)
        job_id = request.path_params["job_id"]
        chosen = fields.get("from_step", "").strip()
        if chosen and not (chosen.isascii() and chosen.isdigit() and 1 <= int(chosen) <= 10_000):
            return self.redirect(f"/jobs/{_quoted(job_id)}?done=bad-step")
        from_step = int(chosen) if chosen else None
        done = await replay(storage.jobs, job_id, now, from_step)
        said = "not-retried" if not done else "retry" if from_step is None else "retry-from"
        return self.redirect(f"/jobs/{_quoted(job_id)}?done={said}")

    async def cancel(self, request: Request, session: Session,
                     fields: dict[str, str]) -> Response:
        storage, _, now = self._state(request)
        job_id = request.path_params["job_id"]
        done = await storage.jobs.cancel([job_id], now)
        return self.redirect(f"/jobs/{_quoted(job_id)}?done="
                             f"{'cancel' if done else 'not-cancelled'}")

    async def pause(self, request: Request, session: Session, fields: dict[str, str]) -> Response:
        storage, _, now = self._state(request)
        await storage.jobs.pause(_workflow(fields), now)
        return self.redirect("/jobs?done=pause")

    async def resume(self, request: Request, session: Session,
                     fields: dict[str, str]) -> Response:
        storage, _, _ = self._state(request)
        await storage.jobs.resume(_workflow(fields))
        return self.redirect("/jobs?done=resume")


def _workflow(fields: dict[str, str]) -> str | None:
    """The workflow a pause or resume names; none (or `*`) is every workflow."""
    name = fields.get("workflow", "").strip()[:paging.MAX_FILTER]
    return None if name in ("", "*") else name


def _safe(target: str) -> str:
    """A console path to go to after signing in, or "" (home) for anything else."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target \
            and target.isprintable() and len(target) <= 2000:
        return target
    return ""


def _quoted(text: str) -> str:
    return quote(text, safe="")
