"""CHANGELOG.md is in Keep a Changelog form (https://keepachangelog.com/en/1.1.0/), and the
version the package declares is the newest one it releases."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from itertools import pairwise
from pathlib import Path

import pytest

import gateway

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = ROOT / "CHANGELOG.md"
HEADER = """\
# Changelog

The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/), and this
project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).
"""
UNRELEASED = "## [Unreleased]"
RELEASE = re.compile(r"## \[(?P<version>(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*))\] - "
                     r"(?P<date>\d{4}-\d{2}-\d{2})")
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}

Release = tuple[tuple[int, int, int], date]


def released(text: str) -> list[Release]:
    """The released versions and their dates, newest first, once the text is checked: a
    header naming Keep a Changelog and Semantic Versioning, `## [Unreleased]` first, then
    `## [X.Y.Z] - YYYY-MM-DD` headings, newest first, each version with sections of the six
    kinds only. Raises AssertionError (or ValueError, for a date) at the first problem."""
    header, _, body = text.partition("\n## ")
    assert header.startswith("# Changelog\n"), "the title is not `# Changelog`"
    assert "[Keep a Changelog](https://keepachangelog.com/en/1.1.0/)" in header
    assert "[Semantic Versioning](https://semver.org/spec/v2.0.0.html)" in header
    parts = re.split(r"^(## .*)$", "## " + body, flags=re.M)[1:]
    headings, contents = parts[0::2], parts[1::2]
    assert headings and headings[0] == UNRELEASED, "`## [Unreleased]` does not come first"
    found: list[Release] = []
    for heading, content in zip(headings, contents, strict=True):
        kinds = re.findall(r"^### (.*)$", content, flags=re.M)
        assert set(kinds) <= KINDS, f"{heading}: a section of no Keep a Changelog kind: {kinds}"
        assert len(kinds) == len(set(kinds)), f"{heading}: a section twice: {kinds}"
        if heading == UNRELEASED:
            assert not found, "`## [Unreleased]` after a release"
            continue
        match = RELEASE.fullmatch(heading)
        assert match, f"not a Keep a Changelog release heading: {heading!r}"
        assert kinds, f"{heading}: a release with no section"
        major, minor, patch = (int(part) for part in match["version"].split("."))
        found.append(((major, minor, patch), date.fromisoformat(match["date"])))
    assert found, "no released version"
    assert all(a[0] > b[0] and a[1] >= b[1] for a, b in pairwise(found)), \
        "releases are not newest first (by version and by date)"
    return found


def newest_version(text: str) -> str:
    return ".".join(str(n) for n in released(text)[0][0])


def test_the_changelog_is_in_keep_a_changelog_form() -> None:
    assert len(released(CHANGELOG.read_text())) >= 2


def test_the_package_version_is_the_newest_release() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == newest_version(CHANGELOG.read_text())
    assert gateway.__version__ == project["version"]


GOOD = HEADER + """
## [Unreleased]

### Changed
- y

## [0.5.0] - 2026-12-06

### Fixed
- x

## [0.4.0] - 2026-12-02

### Added
- w
"""


def test_a_changelog_in_form_passes() -> None:
    assert newest_version(GOOD) == "0.5.0"


@pytest.mark.parametrize("bad", [
    GOOD.replace("## [0.5.0] - 2026-12-06", "## 0.5.0 - 2026-12-06"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.5] - 2026-12-06"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [v0.5.0] - 2026-12-06"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.5.0] 2026-12-06"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.5.0] - 6 December 2026"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.5.0] - 2026-13-06"),
    GOOD.replace("## [Unreleased]", "## Unreleased"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.3.0] - 2026-12-06"),
    GOOD.replace("## [0.5.0] - 2026-12-06", "## [0.5.0] - 2026-12-01"),
    GOOD.replace("### Fixed", "### Notes"),
    GOOD.replace("### Fixed\n- x", "### Fixed\n- x\n\n### Fixed\n- z"),
    GOOD.replace("### Fixed\n- x\n", ""),
    GOOD.replace("[Semantic Versioning](https://semver.org/spec/v2.0.0.html)", "SemVer"),
    GOOD.replace("## [Unreleased]\n\n### Changed\n- y\n\n", "") + "\n## [Unreleased]\n",
], ids=["no-brackets", "two-numbers", "v-prefix", "no-dash", "prose-date", "no-such-month",
        "unreleased-unbracketed", "older-version-first", "older-date-first", "unknown-kind",
        "kind-twice", "empty-release", "no-semver-link", "unreleased-last"])
def test_a_changelog_out_of_form_is_refused(bad: str) -> None:
    assert bad != GOOD
    with pytest.raises((AssertionError, ValueError)):
        released(bad)
