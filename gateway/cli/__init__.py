"""The `gateway` command: the only package that prints or exits.

`base` holds the group, its shared options and the boundary where errors become exit codes;
`commands` the commands that check, serve and run workflows; `stores` those over the
database (run log, admin keys, migrations); `jobs` the worker and the jobs; `ops`
those for operations (workflow tests).
"""

from __future__ import annotations

from gateway.cli import commands, jobs, ops, stores
from gateway.cli.base import main

__all__ = ["commands", "jobs", "main", "ops", "stores"]
