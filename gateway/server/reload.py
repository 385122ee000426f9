"""Hot reload: SIGHUP, or a change to the config's files (`gateway serve --reload`, through
`watchfiles`), loads the config again and swaps it in whole.

A valid config is served from the next request on; requests in flight finish on the one they
started with. An invalid one is refused: the old config keeps serving, and the server log
carries the same located diagnostics as `gateway validate`. New data types and indexes are
applied first, in one transaction; a reload whose indexes cannot be built (a unique index over
values already duplicated) or that changes the database is refused. Settings of the server
itself (host, port, workers, its timeouts and limits on connections) wait for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from gateway.compiler.loader import SUFFIXES, check, config_version, discover, errors
from gateway.config.diagnostics import render_text
from gateway.core.errors import Diagnostic, GatewayError
from gateway.core.settings import with_environment
from gateway.runtime.model import Registry
from gateway.webhooks import signature

RELOAD_ENV = "GATEWAY_RELOAD"  # "1": watch the config's files (set by `gateway serve --reload`)
DEBOUNCE_MS = 200  # changes closer together than this are one reload
log = logging.getLogger("gateway.reload")
Install = Callable[[Any, Registry, str], None]
# Settings only a restart applies: the server's socket, processes and connection limits.
# The run log's retention task and queue are set up once, at start, too.
RESTART_ONLY = ("host", "port", "workers", "max_header_bytes", "header_timeout",
                "body_timeout", "max_connections", "max_connections_per_address",
                "first_byte_timeout", "database", "run_retention",
                "failed_run_retention", "run_log_max_queue", "run_log_flush_timeout",
                "run_log_max_rows", "run_log_max_bytes", "run_log_purge_interval",
                "metrics_enabled")


class Reloader:
    """Reloads one app's config from `paths`, one reload at a time."""

    def __init__(self, app: Any, paths: Sequence[Path], install: Install) -> None:
        self.app = app
        self.paths = list(paths)
        self.install = install
        self.lock = asyncio.Lock()
        self.reloads = 0  # how many were applied

    async def reload(self, reason: str) -> bool:
        """Load, check and swap in the config; False (and the old config kept) when refused."""
        async with self.lock:
            try:
                registry, version = await self._load()
                storage = self.app.state.storage
                if storage is not None:
                    await storage.apply_types(list(registry.data_types.values()))
            except _Refused as exc:
                return self._refuse(reason, exc.message)
            except GatewayError as exc:
                return self._refuse(reason, f"the data types cannot be applied: {exc.message}")
            self.install(self.app, registry, version)
            self.app.state.reload_error = None
            self.reloads += 1
            log.info("config reloaded (%s): version %s, %d workflow(s)", reason, version,
                     len(registry.workflows))
            return True

    async def _load(self) -> tuple[Registry, str]:
        # Reading and compiling: off the event loop, which goes on serving meanwhile.
        registry, problems, version = await asyncio.to_thread(_read, self.paths)
        if errors(problems):
            raise _Refused(f"the config is invalid:\n{render_text(problems)}")
        settings = with_environment(registry.settings)
        missing = settings.missing_secrets()
        if missing:  # as `serve` refuses to start: a `verify` would fail every delivery
            raise _Refused("the settings declare secrets the environment does not set: "
                           + ", ".join(missing))
        unusable = signature.secret_problems(registry, settings.secrets)
        if unusable:
            raise _Refused("a webhook secret the environment sets cannot check signatures: "
                           + "; ".join(unusable))
        old = self.app.state.registry.settings
        if settings.database != old.database:
            raise _Refused("the database cannot change on a reload (restart the server)")
        waiting = [name for name in RESTART_ONLY
                   if getattr(settings, name) != getattr(old, name) and name != "database"]
        if waiting:
            log.warning("config reload: %s change(s) at the next restart", ", ".join(waiting))
            settings = dataclasses.replace(settings, **{n: getattr(old, n) for n in waiting})
        return dataclasses.replace(registry, settings=settings), version

    def _refuse(self, reason: str, message: str) -> bool:
        self.app.state.reload_error = message
        log.error("config reload refused (%s); the previous config keeps serving: %s",
                  reason, message)
        return False

    async def watch(self, ready: asyncio.Event | None = None) -> None:
        """Reload on every change to a YAML file under the paths, until cancelled."""
        watched = [p for p in self.paths if p.exists()]
        async for _ in awatch(*watched, watch_filter=_is_config, debounce=DEBOUNCE_MS,
                              step=50, rust_timeout=1000, yield_on_timeout=True):
            if ready is not None and not ready.is_set():
                ready.set()  # the first (empty) wake-up: watching has begun
                continue
            if _:
                await self.reload("files changed")


def _read(paths: Sequence[Path]) -> tuple[Registry, list[Diagnostic], str]:
    registry, problems = check(paths)
    files, _ = discover(paths)
    return registry, problems, config_version(str(f) for f in files)


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _is_config(change: Change, path: str) -> bool:
    return path.endswith(SUFFIXES)


@contextlib.asynccontextmanager
async def reloading(app: Any, paths: Sequence[Path], watch: bool,
                    install: Install) -> AsyncIterator[Reloader | None]:
    """For the app's lifespan: SIGHUP reloads (where signals exist), and with `watch`, any
    change to the files. Nothing without `paths`."""
    if not paths:
        app.state.reloader = None
        yield None
        return
    reloader = Reloader(app, paths, install)
    app.state.reloader = reloader
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def on_hangup() -> None:
        task = loop.create_task(reloader.reload("SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    hangup = hasattr(signal, "SIGHUP")
    if hangup:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    watcher = loop.create_task(reloader.watch()) if watch else None
    try:
        yield reloader
    finally:
        if hangup:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in [*tasks, *([watcher] if watcher else [])]:
            task.cancel()
        for task in [*tasks, *([watcher] if watcher else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
