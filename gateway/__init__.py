"""The workflow gateway: YAML workflows validated, compiled and served as HTTP endpoints."""

from __future__ import annotations

__version__ = "0.5.0"
