"""The releasable package: `python -m build` makes a wheel and an sdist, each installs into a
fresh virtual environment, and the installed `gateway` validates the shipped workflows and
the examples with its own copy of the schema (not this checkout's), and serves them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.request
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel, as a release makes them (the wheel is built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    return out


def artifact(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def clean_env() -> dict[str, str]:
    """The environment without anything that would import this checkout instead."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}


def fresh_venv(where: Path) -> Path:
    """A new virtual environment that sees this one's installed libraries (the dependencies)
    after its own, so installing with --no-deps needs no network. A path in a .pth file is
    added as is: the .pth files there (an editable install of this checkout) are not read."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=clean_env(),
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(own) / "_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))
    return python


def install_and_validate(artifact: Path, where: Path) -> None:
    python = fresh_venv(where)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", "--no-build-isolation", str(artifact)],
        check=True, capture_output=True, text=True, env=clean_env(), cwd=where,
    )
    probe = subprocess.run(
        [str(python), "-c", "import gateway.config.schema as s; print(s.schema_source())"],
        check=True, capture_output=True, text=True, env=clean_env(), cwd=where,
    )
    schema = Path(probe.stdout.strip()).resolve()
    assert schema.is_relative_to(where.resolve()), schema
    assert schema.name == "gateway.schema.json"
    folders = [ROOT / "workflows.d", *sorted(p for p in (ROOT / "examples").iterdir()
                                             if p.is_dir())]
    for folder in folders:
        run = subprocess.run(
            [str(where / "bin" / "gateway"), "validate", str(folder)],
            capture_output=True, text=True, env=clean_env(), cwd=where,
        )
        assert run.returncode == 0, f"{folder.name}: {run.stdout}{run.stderr}"
    serve(where, ROOT / "workflows.d")


def serve(where: Path, folder: Path) -> None:
    """The installed `gateway serve` on `folder`, with no environment variable of its own,
    answers a workflow."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(where / "bin" / "gateway"), "serve", "--config", str(folder), "--host",
         "127.0.0.1", "--port", str(port), "--database", f"sqlite:///{where / 'g.db'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(), cwd=where,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/1.1/wf/status", timeout=5) as answer:
                    assert answer.status == 200
                    assert answer.read().startswith(b"ok")
                    return
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the installed gateway did not answer"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_the_sdist_carries_what_a_wheel_is_built_from(dist: Path) -> None:
    with tarfile.open(artifact(dist, "*.tar.gz")) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md",
            "schemas/gateway.schema.json", "gateway/__init__.py",
            "workflows.d/status.yaml"} <= names


def test_the_wheel_carries_the_schema_the_licence_and_the_metadata(dist: Path) -> None:
    with zipfile.ZipFile(artifact(dist, "*.whl")) as archive:
        names = set(archive.namelist())
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(metadata).decode())
        (entry,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry).decode()
    assert "gateway/schemas/gateway.schema.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "Programming Language :: Python :: 3 :: Only" in meta.get_all("Classifier")
    assert "gateway = gateway.cli:main" in scripts


@pytest.mark.parametrize("pattern", ["*.whl", "*.tar.gz"], ids=["wheel", "sdist"])
def test_an_installed_package_validates_and_serves_the_shipped_workflows(
    dist: Path, tmp_path: Path, pattern: str,
) -> None:
    install_and_validate(artifact(dist, pattern), tmp_path / "venv")
