"""The client stands alone: it imports only httpx, python-socketio (and rich for the bar), and
``client/`` alone (its folder, nothing above it) builds a wheel holding just ``cellseg_client``
and ``cellseg``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.client.conftest import ROOT, User, write_pngs
from tests.harness import Service

ALLOWED = {"cellseg_client", "httpx", "socketio", "rich"}


def test_every_import_is_stdlib_httpx_socketio_or_rich() -> None:
    foreign = set()
    for path in (ROOT / "client" / "cellseg_client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in ALLOWED and top not in sys.stdlib_module_names:
                    foreign.add(f"{path.relative_to(ROOT)}: {name}")
    assert not foreign, sorted(foreign)


def test_importing_the_client_and_cli_loads_nothing_of_the_service() -> None:
    code = (
        "import sys, cellseg_client, cellseg_client.cli.main;"
        "bad = {'torch', 'numpy', 'cv2', 'backend', 'ml_service', 'models', 'workers',"
        " 'fastapi', 'asyncpg', 'celery', 'imageheader', 'loadtest'};"
        "print(sorted(bad & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_client_alone_builds_a_wheel_with_the_command(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "client",
        tmp_path / "client",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(tmp_path / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "dist").glob("cellseg_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "cellseg = cellseg_client.cli.main:main" in zf.read(entry_points).decode()
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    packaged = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packaged == {"cellseg_client"}
    assert "cellseg_client/cli/segment.py" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert not any("torch" in r for r in requires)
    assert any(r.startswith("Requires-Dist: httpx") for r in requires)


@pytest.mark.slow
def test_the_client_installed_alone_with_a_stock_pip_has_live_progress(
    service: Service, user: User, tmp_path: Path
) -> None:
    """A fresh venv (the interpreter's bundled pip), ``pip install ./client`` and nothing else:
    ``cellseg segment`` follows the job over Socket.IO, not by polling."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT / "client")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    write_pngs(tmp_path / "images", 2, seed=5)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CELLSEG_URL=service.url, CELLSEG_API_KEY=user.key)
    done = subprocess.run(
        [str(venv / "bin" / "cellseg"), "-v", "segment", str(tmp_path / "images"), "--model",
         "unet", "--out", str(tmp_path / "out"), "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live progress: Socket.IO connected" in done.stderr
    assert "live progress unavailable" not in done.stderr
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cellseg_client as c; print(c.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.stdout.startswith(str(venv))  # the installed copy, not the checkout's


def test_a_reader_that_stops_early_ends_the_command_quietly(
    service: Service, user: User
) -> None:
    """``cellseg models --json | head -n 0``: the reader is gone before the command writes;
    no BrokenPipeError traceback, exit 0."""
    shell = (
        f"{sys.executable} -m cellseg_client --url {service.url} --api-key {user.key} "
        "models --json | head -n 0; echo \"rc=${PIPESTATUS[0]}\""
    )
    done = subprocess.run(
        ["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "rc=0", done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
