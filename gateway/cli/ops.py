"""The commands for operations: `test` (workflow tests in CI), `openapi`."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

import click

from gateway.cli.base import DEFAULT_CONFIG, Failed, load_or_exit, main, settled
from gateway.core.encoding import dumps_pretty, escape
from gateway.loader import config_version, discover
from gateway.openapi import document
from gateway.testrun import Outcome, failed, junit_xml, run_tests


@main.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report to this file (for CI).")
@click.option("--verbose", "-v", is_flag=True, help="List the cases that pass too.")
def test_command(paths: tuple[Path, ...], junit: Path | None, verbose: bool) -> None:
    """Run the workflow tests (`kind: workflow_test`) in-process, each on a throwaway
    database; the workflows and the tests are read from PATHS together.

    \b
    Example:
      gateway test workflows.d/ --junit report.xml
    Exits 0 when every case passes, 1 when one fails (each failure located to its case's
    file:line, expected against got), 2 on a usage error.
    """
    registry = load_or_exit(list(paths) or [DEFAULT_CONFIG])
    registry = dataclasses.replace(registry, settings=settled(registry))
    if not registry.tests:
        raise Failed("error: no workflow_test documents in " +
                     ", ".join(str(p) for p in (paths or (DEFAULT_CONFIG,))))
    with tempfile.TemporaryDirectory(prefix="gateway-test-") as folder:
        outcomes = asyncio.run(run_tests(registry, Path(folder)))
    for outcome in outcomes:
        if verbose or not outcome.passed:
            click.echo(_line(outcome))
    bad = failed(outcomes)
    click.echo(f"{len(outcomes) - len(bad)} passed, {len(bad)} failed "
               f"({len(registry.tests)} test(s))")
    if junit is not None:
        junit.write_bytes(junit_xml(outcomes))
    if bad:
        raise Failed("")


def _line(outcome: Outcome) -> str:
    head = (f"{outcome.location}: {'PASS' if outcome.passed else 'FAIL'} "
            f"{escape(outcome.test)}: {escape(outcome.case)}")
    return "\n".join([head, *(f"    {escape(f)}" for f in outcome.failures)])


@main.command("openapi")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def openapi_command(paths: tuple[Path, ...]) -> None:
    """Print the OpenAPI 3.1 document of the exposed workflows (what the server serves at
    /api/1.1/meta/swagger.json).

    \b
    Example:
      gateway openapi workflows.d/ > openapi.json
    """
    targets = list(paths) or [DEFAULT_CONFIG]
    registry = load_or_exit(targets)
    files, _ = discover(targets)
    click.echo(dumps_pretty(document(registry, version=config_version(str(f) for f in files))))
