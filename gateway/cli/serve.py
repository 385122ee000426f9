"""`gateway serve`: the HTTP server, with its workers, reload and connection limits."""

from __future__ import annotations

import logging.config
import os
from pathlib import Path

import click
import uvicorn

from gateway.cli.group import (
    DEFAULT_CONFIG,
    Failed,
    config_option,
    database_option,
    load_or_exit,
    main,
    refuse_unready,
    refuse_unusable_secrets,
    settled,
)
from gateway.core.logformat import ENV as LOG_FORMAT_ENV
from gateway.core.logformat import log_config
from gateway.server.app import CONFIG_ENV, SCHEDULER_ENV
from gateway.server.protocol import (
    BODY_TIMEOUT_ENV,
    FIRST_BYTE_TIMEOUT_ENV,
    HEADER_TIMEOUT_ENV,
    PER_ADDRESS_ENV,
    TRUSTED_PROXIES_ENV,
    BoundedHttpToolsProtocol,
)
from gateway.server.reload import RELOAD_ENV


@main.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default 1).")
@database_option
@click.option("--no-scheduler", is_flag=True,
              help="Do not run scheduled jobs here (leave them to `gateway worker`).")
@click.option("--reload", "reload_", is_flag=True,
              help="Reload the config when its files change (SIGHUP always reloads).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line, a line per request.")
def serve(config: tuple[Path, ...], host: str | None, port: int | None, workers: int | None,
          database: str | None, no_scheduler: bool, reload_: bool, log_format: str) -> None:
    """Serve the workflows over HTTP (refuses to start on an invalid config), and run the
    scheduler in the same process unless --no-scheduler.

    \b
    Example:
      gateway serve --config workflows.d --port 8000 --workers 2
      gateway serve --reload --log-format json
    A reload (SIGHUP, or a file changed with --reload) swaps a valid config in without
    failing a request, and refuses an invalid one, which the log shows located.
    """
    paths = list(config) or [DEFAULT_CONFIG]
    registry = load_or_exit(paths)
    settings = settled(registry, host=host, port=port, workers=workers, database=database)
    refuse_unready(settings)
    refuse_unusable_secrets(registry, settings)
    if settings.workers > 1 and settings.database.startswith("sqlite:"):
        raise Failed(f"error: {settings.workers} workers cannot share a SQLite database (they "
                     "would block each other's writes); use PostgreSQL "
                     "(--database postgresql://...) for more than one worker, or --workers 1")
    logging.config.dictConfig(log_config(log_format))
    os.environ[LOG_FORMAT_ENV] = log_format
    os.environ[RELOAD_ENV] = "1" if reload_ else "0"
    os.environ[CONFIG_ENV] = os.pathsep.join(str(p.resolve()) for p in paths)
    os.environ["GATEWAY_DATABASE_URL"] = settings.database
    os.environ[SCHEDULER_ENV] = "off" if no_scheduler else "on"
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout.total_seconds())
    os.environ[BODY_TIMEOUT_ENV] = str(settings.body_timeout.total_seconds())
    os.environ[FIRST_BYTE_TIMEOUT_ENV] = str(settings.first_byte_timeout.total_seconds())
    os.environ[PER_ADDRESS_ENV] = str(settings.max_connections_per_address)
    os.environ[TRUSTED_PROXIES_ENV] = ",".join(settings.trusted_proxies)
    uvicorn.run("gateway.server.app:app_from_environment", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop",
                http=BoundedHttpToolsProtocol,
                h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_connections,
                # forwarded headers are read by the app, from `server.trusted_proxies` only
                log_level="info", access_log=False, proxy_headers=False,
                log_config=log_config(log_format))
