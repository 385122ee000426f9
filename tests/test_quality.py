"""The house style's size rule: a module past 400 lines is flagged, one past 500 fails; a
module that grows is split by role, never squeezed. (Lint and types run from
`scripts/check`, beside the tests, not inside them.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WARN_LINES = 400
MOST_LINES = 500


def module_lengths() -> dict[str, int]:
    return {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
            for path in sorted((ROOT / "gateway").rglob("*.py"))}


def test_the_lengths_are_read() -> None:
    lengths = module_lengths()
    assert len(lengths) > 50 and lengths["gateway/runtime/interpreter.py"] > 100


@pytest.mark.filterwarnings("default")
def test_no_module_passes_500_lines() -> None:
    lengths = module_lengths()
    long = {path: lines for path, lines in lengths.items() if lines > WARN_LINES}
    if long:
        warnings.warn(f"modules past {WARN_LINES} lines, to split by role: {long}",
                      stacklevel=1)
    assert {path: lines for path, lines in long.items() if lines > MOST_LINES} == {}
