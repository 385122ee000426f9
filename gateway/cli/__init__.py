"""The `gateway` command: the only package that prints or exits.

`group` holds the command group, its shared options and the boundary where errors become
exit codes; then one module per group of commands: `workflows` (validate, run, routes,
schema, test, openapi), `detect`, `serve`, `jobs` (the worker and the jobs), `runs` (the run
log), `keys` (admin API keys), `user_accounts` (`gateway users`), `db` (migrations) and
`file_store` (`gateway files`).
"""

from __future__ import annotations

from gateway.cli import (
    db,
    detect,
    file_store,
    jobs,
    keys,
    runs,
    serve,
    user_accounts,
    workflows,
)
from gateway.cli.group import main

__all__ = ["db", "detect", "file_store", "jobs", "keys", "main", "runs", "serve",
           "user_accounts", "workflows"]
