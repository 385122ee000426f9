"""Settings: the `settings` document, then the environment (`GATEWAY_*`), then flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

DEFAULT_DATABASE = "sqlite:///gateway.db"
_DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>ms|s|m|h|d)$")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str | int | float) -> timedelta:
    """`300s`, `5m`, `24h`, `14d`, `250ms`; a bare number is seconds."""
    if isinstance(text, (int, float)):
        return timedelta(seconds=text)
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and ms, s, m, h or d)")
    try:
        return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    except OverflowError as exc:
        raise ValueError(f"not a duration: {text!r} is too long") from exc


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is configured with, after every override is applied."""

    database: str = DEFAULT_DATABASE
    secret_names: tuple[str, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = 1_048_576
    max_response_bytes: int = 16_777_216
    max_page_bytes: int = 4_194_304
    max_list_ids: int = 1000
    # Searches whose privacy rules are judged record by record: the most records a type
    # may hold for one (counted before any constraint), and how many judge at once.
    max_privacy_scan: int = 10_000
    privacy_scan_concurrency: int = 2
    run_timeout: timedelta = timedelta(seconds=300)
    template_timeout: timedelta = timedelta(seconds=1)
    max_template_bytes: int = 1_048_576
    max_template_items: int = 100_000
    max_template_operations: int = 1_000_000
    max_pending_jobs: int = 1_000_000
    max_pending_jobs_per_workflow: int = 100_000
    run_retention: timedelta = timedelta(days=14)
    failed_run_retention: timedelta = timedelta(days=30)
    run_log_max_queue: int = 10_000
    run_log_flush_timeout: timedelta = timedelta(seconds=10)
    run_log_max_rows: int | None = None
    run_log_max_bytes: int | None = 1_073_741_824
    run_log_max_value_bytes: int = 16_384
    run_log_sample_success: float = 1.0
    run_log_purge_interval: timedelta = timedelta(minutes=5)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_header_bytes: int = 65_536
    header_timeout: timedelta = timedelta(seconds=10)
    body_timeout: timedelta = timedelta(seconds=30)
    max_connections: int = 1000
    # Proxies whose forwarded headers are believed (`server.trusted_proxies`), and the one
    # header they write (`server.forwarded_header`): see `gateway.runtime.forwarded`.
    trusted_proxies: tuple[str, ...] = ()
    forwarded_header: str = "x-forwarded-for"
    max_connections_per_address: int = 64
    first_byte_timeout: timedelta = timedelta(seconds=5)
    max_event_depth: int = 10
    token_lifetime: timedelta = timedelta(hours=24)
    remember_lifetime: timedelta = timedelta(days=365)
    idle_lapse: timedelta = timedelta(days=30)
    min_password_length: int = 8
    # Failed log-ins from one client network, across e-mails: at most this many per period.
    address_failures: int = 20
    address_failures_per: timedelta = timedelta(minutes=1)
    # --- webhooks and integrations: outbound HTTP, SMTP, shared rate limits ---
    http_block_private_addresses: bool = False
    http_timeout: timedelta = timedelta(seconds=30)
    http_max_response_bytes: int = 10_485_760
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password_secret: str | None = None  # the name of the secret holding the password
    smtp_sender: str | None = None
    smtp_timeout: timedelta = timedelta(seconds=30)
    rate_limits_shared: bool = False
    # A Nominatim-compatible search API that locates geographic addresses (`geocoder:`).
    geocoder_url: str | None = None
    geocoder_timeout: timedelta = timedelta(seconds=10)
    # --- files and images (`files:`, and their `limits:`) ---
    max_file_bytes: int = 52_428_800
    max_image_pixels: int = 50_000_000
    files_folder: str = "files"
    files_s3: Mapping[str, str] | None = None  # bucket, prefix, endpoint_url, region, and
    # the names of the secrets holding its keys (access_key_id_secret, ...)
    files_secret: str | None = None  # the name of the secret file links are signed with
    files_link_lifetime: timedelta = timedelta(hours=1)
    files_allowed_types: tuple[str, ...] = ()
    # --- the scheduler (`scheduler:`) ---
    scheduler_lease: timedelta = timedelta(seconds=60)
    scheduler_concurrency: int = 10
    scheduler_poll: timedelta = timedelta(seconds=1)
    scheduler_grace: timedelta = timedelta(seconds=30)
    scheduler_max_depth: int = 10
    scheduler_max_list: int = 100_000
    # Operations: the path prefix everything is served under, who may read the OpenAPI
    # document and the metrics.
    prefix: str = ""
    openapi_public: bool = False
    metrics_enabled: bool = True
    metrics_public: bool = False
    # Bubble's "use field display for key names", on the Data API (`data_api:`) and in the
    # records workflows return (`workflow_api:`).
    data_api_display_keys: bool = False
    workflow_api_display_keys: bool = False
    # The console (`console:`): off unless enabled; how long a sign-in lasts; the secret
    # (by name) its cookies are signed with (None: a random key per process).
    console_enabled: bool = False
    console_session_lifetime: timedelta = timedelta(hours=8)
    console_secret: str | None = None
    # Redirect responses (`redirects:`): the URL prefixes a run may redirect to, and how long
    # a redirect's URL (with its query parameters) may be.
    redirect_allowed: tuple[str, ...] = ()
    redirect_max_url: int = 8192
    # Tracing (`tracing:`, read when a process starts): off unless enabled; the share of
    # new traces kept; where a trace is shown (`{trace_id}` in it); whose `traceparent` is
    # continued (`never`, `always`, or networks); how many finished spans wait for export.
    tracing_enabled: bool = False
    tracing_sample_ratio: float = 1.0
    tracing_ui_url: str | None = None
    tracing_trust_parent: str | tuple[str, ...] = "never"
    tracing_max_queue: int = 2048

    def missing_secrets(self) -> list[str]:
        """Declared secrets the environment does not set, or sets to an empty string (an
        empty secret would match an empty signature)."""
        return [name for name in self.secret_names if not self.secrets.get(name)]


def from_document(data: Mapping[str, Any] | None) -> Settings:
    """Settings from a validated `settings` document (or the defaults when there is none)."""
    if not data:
        return Settings()
    limits = data.get("limits", {})
    run_log = data.get("run_log", {})
    server = data.get("server", {})
    tokens = data.get("tokens", {})
    defaults = Settings()
    return Settings(
        database=data.get("database", defaults.database),
        secret_names=tuple(data.get("secrets", ())),
        max_body_bytes=limits.get("max_body_bytes", defaults.max_body_bytes),
        max_response_bytes=limits.get("max_response_bytes", defaults.max_response_bytes),
        max_page_bytes=limits.get("max_page_bytes", defaults.max_page_bytes),
        max_list_ids=limits.get("max_list_ids", defaults.max_list_ids),
        max_privacy_scan=limits.get("max_privacy_scan", defaults.max_privacy_scan),
        privacy_scan_concurrency=limits.get("privacy_scan_concurrency",
                                            defaults.privacy_scan_concurrency),
        run_timeout=parse_duration(limits.get("run_timeout", "300s")),
        template_timeout=parse_duration(limits.get("template_timeout", "1s")),
        max_template_bytes=limits.get("max_template_bytes", defaults.max_template_bytes),
        max_template_items=limits.get("max_template_items", defaults.max_template_items),
        max_template_operations=limits.get("max_template_operations",
                                           defaults.max_template_operations),
        max_pending_jobs=limits.get("max_pending_jobs", defaults.max_pending_jobs),
        max_pending_jobs_per_workflow=limits.get("max_pending_jobs_per_workflow",
                                                 defaults.max_pending_jobs_per_workflow),
        run_retention=parse_duration(run_log.get("retention", "14d")),
        failed_run_retention=parse_duration(run_log.get("failed_retention", "30d")),
        run_log_max_queue=run_log.get("max_queue", defaults.run_log_max_queue),
        run_log_flush_timeout=parse_duration(run_log.get("flush_timeout", "10s")),
        run_log_max_rows=run_log.get("max_rows"),
        run_log_max_bytes=run_log.get("max_bytes", defaults.run_log_max_bytes),
        run_log_max_value_bytes=run_log.get("max_value_bytes", defaults.run_log_max_value_bytes),
        run_log_sample_success=run_log.get("sample_success", defaults.run_log_sample_success),
        run_log_purge_interval=parse_duration(run_log.get("purge_interval", "5m")),
        host=server.get("host", defaults.host),
        port=server.get("port", defaults.port),
        workers=server.get("workers", defaults.workers),
        token_lifetime=parse_duration(tokens.get("lifetime", "24h")),
        remember_lifetime=parse_duration(tokens.get("remember_lifetime", "365d")),
        idle_lapse=parse_duration(tokens.get("idle_lapse", "30d")),
        min_password_length=tokens.get("min_password_length", defaults.min_password_length),
        address_failures=tokens.get("address_failures", {}).get(
            "failures", defaults.address_failures),
        address_failures_per=parse_duration(tokens.get("address_failures", {}).get("per", "1m")),
        max_header_bytes=server.get("max_header_bytes", defaults.max_header_bytes),
        header_timeout=parse_duration(server.get("header_timeout", "10s")),
        body_timeout=parse_duration(server.get("body_timeout", "30s")),
        max_connections=server.get("max_connections", defaults.max_connections),
        trusted_proxies=tuple(server.get("trusted_proxies", ())),
        forwarded_header=server.get("forwarded_header", defaults.forwarded_header),
        max_connections_per_address=server.get("max_connections_per_address",
                                               defaults.max_connections_per_address),
        first_byte_timeout=parse_duration(server.get("first_byte_timeout", "5s")),
        **_integrations(data, defaults),
        **_scheduler(data.get("scheduler", {}), defaults),
        **_operations(data, server),
        **_console(data.get("console", {})),
        **_files(data.get("files", {}), limits, defaults),
        **_tracing(data.get("tracing", {}), defaults),
    )


_SECRET_REFERENCE = re.compile(r"^\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def secret_reference(text: str | None) -> str | None:
    """The secret a `{{ secrets.NAME }}` setting names, or None for anything else."""
    match = _SECRET_REFERENCE.match(text or "")
    return match.group(1) if match else None


def _integrations(data: Mapping[str, Any], defaults: Settings) -> dict[str, Any]:
    """The `http`, `smtp`, `geocoder` and `rate_limits` settings."""
    http, smtp = data.get("http", {}), data.get("smtp", {})
    return {
        "http_block_private_addresses": http.get("block_private_addresses", False),
        "http_timeout": parse_duration(http.get("timeout", "30s")),
        "http_max_response_bytes": http.get("max_response_bytes",
                                            defaults.http_max_response_bytes),
        "smtp_host": smtp.get("host"), "smtp_port": smtp.get("port", defaults.smtp_port),
        "smtp_starttls": smtp.get("starttls", not smtp.get("tls", False)),
        "smtp_tls": smtp.get("tls", False), "smtp_username": smtp.get("username"),
        "smtp_password_secret": secret_reference(smtp.get("password")),
        "smtp_sender": smtp.get("from"),
        "smtp_timeout": parse_duration(smtp.get("timeout", "30s")),
        "geocoder_url": data.get("geocoder", {}).get("url"),
        "geocoder_timeout": parse_duration(data.get("geocoder", {}).get("timeout", "10s")),
        "rate_limits_shared": data.get("rate_limits", {}).get("shared", False),
    }


def _scheduler(block: Mapping[str, Any], defaults: Settings) -> dict[str, Any]:
    """The `scheduler:` block: leases, how many jobs run at once, polling, the grace a
    stopping worker gives running jobs, and how deep scheduled runs may schedule more."""
    return {
        "scheduler_lease": parse_duration(block.get("lease", "60s")),
        "scheduler_concurrency": block.get("concurrency", defaults.scheduler_concurrency),
        "scheduler_poll": parse_duration(block.get("poll", "1s")),
        "scheduler_grace": parse_duration(block.get("grace", "30s")),
        "scheduler_max_depth": block.get("max_depth", defaults.scheduler_max_depth),
        "scheduler_max_list": block.get("max_list", defaults.scheduler_max_list),
    }


def _operations(data: Mapping[str, Any], server: Mapping[str, Any]) -> dict[str, Any]:
    openapi = data.get("openapi", {})
    metrics = data.get("metrics", {})
    return {"prefix": server.get("prefix", "").rstrip("/"),
            "openapi_public": openapi.get("public", False),
            "metrics_enabled": metrics.get("enabled", True),
            "metrics_public": metrics.get("public", False),
            "data_api_display_keys": data.get("data_api", {}).get("display_keys", False),
            "workflow_api_display_keys": data.get("workflow_api", {}).get("display_keys", False),
            "redirect_allowed": tuple(data.get("redirects", {}).get("allowed", ())),
            "redirect_max_url": data.get("redirects", {}).get("max_url_length", 8192)}


def _console(block: Mapping[str, Any]) -> dict[str, Any]:
    return {"console_enabled": block.get("enabled", False),
            "console_session_lifetime": parse_duration(block.get("session_lifetime", "8h")),
            "console_secret": secret_reference(block.get("secret"))}


def _files(block: Mapping[str, Any], limits: Mapping[str, Any],
           defaults: Settings) -> dict[str, Any]:
    """The `files:` block (where files are kept, how their links are signed) and the
    limits uploads are held to."""
    s3 = block.get("s3")
    return {
        "max_file_bytes": limits.get("max_file_bytes", defaults.max_file_bytes),
        "max_image_pixels": limits.get("max_image_pixels", defaults.max_image_pixels),
        "files_folder": block.get("folder", defaults.files_folder),
        "files_s3": None if s3 is None else {
            **{k: v for k, v in s3.items() if k in ("bucket", "prefix", "endpoint_url",
                                                     "region")},
            "access_key_id_secret": secret_reference(s3.get("access_key_id")),
            "secret_access_key_secret": secret_reference(s3.get("secret_access_key"))},
        "files_secret": secret_reference(block.get("secret")),
        "files_link_lifetime": parse_duration(block.get("link_lifetime", "1h")),
        "files_allowed_types": tuple(block.get("allowed_types", ())),
    }


def _tracing(block: Mapping[str, Any], defaults: Settings) -> dict[str, Any]:
    trust = block.get("trust_parent", defaults.tracing_trust_parent)
    return {"tracing_enabled": block.get("enabled", False),
            "tracing_sample_ratio": float(block.get("sample_ratio",
                                                    defaults.tracing_sample_ratio)),
            "tracing_ui_url": block.get("ui_url"),
            "tracing_trust_parent": trust if isinstance(trust, str) else tuple(trust),
            "tracing_max_queue": block.get("max_queue", defaults.tracing_max_queue)}


# The environment variables that override the settings document: the variable, the
# `Settings` field it sets, and the settings key it stands for (flags override them in turn).
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("GATEWAY_DATABASE_URL", "database", "database"),
    ("GATEWAY_HOST", "host", "server.host"),
    ("GATEWAY_PORT", "port", "server.port"),
    ("GATEWAY_WORKERS", "workers", "server.workers"),
    ("GATEWAY_MAX_BODY_BYTES", "max_body_bytes", "limits.max_body_bytes"),
)


def with_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """Apply the variables of `ENVIRONMENT`, and read the declared secrets from the
    environment."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {
        "secrets": {name: env[name] for name in settings.secret_names if name in env},
    }
    for name, key, _ in ENVIRONMENT:
        if name in env:
            text = env[name]
            changes[key] = int(text) if isinstance(getattr(settings, key), int) else text
    return replace(settings, **changes)


def with_flags(settings: Settings, **flags: Any) -> Settings:
    """Apply command-line flags; a flag left at None changes nothing."""
    return replace(settings, **{key: value for key, value in flags.items() if value is not None})
