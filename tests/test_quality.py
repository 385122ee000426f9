"""The code base stays clean: ruff's lint and mypy --strict, run as in any checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "gateway", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_passes_400_lines() -> None:
    # The house style: files under ~400 lines; one that grows past it is split by role.
    long = {str(path.relative_to(ROOT)): lines for path in sorted((ROOT / "gateway").rglob("*.py"))
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
