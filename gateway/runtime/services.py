"""The outbound services a run's actions use: one pooled HTTP client
(`gateway.runtime.http_client`), one mailer and, when tracing is on, one tracer
(`gateway.tracing`) per process, held for the process's life by whoever owns it (the app's
lifespan, `gateway worker`, `gateway run`), always through `Services.running`, and handed
to every run through its `RunContext`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

import aiosmtplib

from gateway.core.settings import Settings
from gateway.files.service import Files, open_files
from gateway.runtime.after_commit import settled
from gateway.tracing import start as start_tracing

if TYPE_CHECKING:
    import httpx

    from gateway.tracing.otel import Tracing


SETTLE_SECONDS = 30.0  # the most a stopping process waits for work runs handed on


class MailError(Exception):
    """The SMTP server refused the message or could not be reached."""


@dataclass(slots=True)
class Mailer:
    """Sends messages through the SMTP server of the settings (`smtp:`)."""

    host: str
    port: int = 587
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    timeout: float = 30.0

    async def send(self, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
        """Send; the recipients the server refused (while taking the others), each with its
        answer. When it refuses them all, or the message, `MailError`."""
        try:
            errors, _ = await aiosmtplib.send(
                message, recipients=recipients, hostname=self.host, port=self.port,
                username=self.username, password=self.password, use_tls=self.tls,
                start_tls=self.starttls and not self.tls, timeout=self.timeout)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise MailError(f"the SMTP server {self.host}:{self.port} did not take the "
                            f"message: {exc}") from exc
        return {address: f"{answer.code} {answer.message}"[:200]
                for address, answer in errors.items()}


def mailer(settings: Settings, secrets: Mapping[str, str]) -> Mailer | None:
    if settings.smtp_host is None:
        return None
    password = secrets.get(settings.smtp_password_secret or "") or None
    return Mailer(settings.smtp_host, settings.smtp_port, settings.smtp_starttls,
                  settings.smtp_tls, settings.smtp_username, password, settings.smtp_sender,
                  settings.smtp_timeout.total_seconds())


@dataclass(slots=True)
class Services:
    """What a run's actions call out through; empty until `start`, and again after `stop`.

    The HTTP client is made at its first use while the services run: loading the CA bundle
    costs a process some 7 MiB, which one whose workflows never call out does not pay."""

    mailer: Mailer | None = None
    # Where spans go while the services run with tracing on (`gateway.tracing`); else None.
    tracing: Tracing | None = None
    max_response_bytes: int = 10_485_760
    settings: Settings = field(default_factory=Settings)
    _running: bool = False
    _http: httpx.AsyncClient | None = None
    _files: Files | None = None

    async def start(self, settings: Settings) -> None:
        self.settings = settings
        self.max_response_bytes = settings.http_max_response_bytes
        self.mailer = mailer(settings, settings.secrets)
        self.tracing = start_tracing(settings)
        self._running = True

    @property
    def started(self) -> bool:
        return self._running

    @property
    def http(self) -> httpx.AsyncClient | None:
        """The process's HTTP client while the services run (None otherwise)."""
        if self._http is None and self._running:
            from gateway.runtime.http_client import http_client  # at first use: see there
            self._http = http_client(self.settings)
        return self._http

    @property
    def files(self) -> Files | None:
        """The process's files (their store, limits and links) while the services run."""
        if self._files is None and self._running:
            self._files = open_files(self.settings)
        return self._files

    async def stop(self) -> None:
        client, self._http, self.mailer, self._running = self._http, None, None, False
        files, self._files = self._files, None
        tracing, self.tracing = self.tracing, None
        if client is not None:
            await client.aclose()
        if files is not None:
            await files.close()
        if tracing is not None:  # what waits is sent, off the event loop
            await asyncio.to_thread(tracing.close_all)

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings) -> AsyncIterator[Services]:
        """Started with `settings` while the block runs, stopped after it: the one way a
        process that runs workflows (serve, worker, run) holds its services."""
        await self.start(settings)
        try:
            yield self
        finally:
            with contextlib.suppress(TimeoutError):  # what runs handed on (e-mails) first
                await asyncio.wait_for(settled(), SETTLE_SECONDS)
            await self.stop()
