"""Layering (DESIGN.md) and code habits, checked by the tools that own them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_import_layering_contracts_hold() -> None:
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower() or " 0 broken" in result.stdout.lower()


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = run(
        str(BIN / "mypy"),
        "imageheader",
        "models",
        "ml_service",
        "contracts",
        "backend",
        "workers",
        "scripts",
        "loadtest",
        "client/cellseg_client",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_worker_importing_the_engine_loads_no_tool_training_or_cli_module() -> None:
    """What ``workers.runtime`` imports to serve (the engine) stays on the request path."""
    code = (
        "import sys, ml_service.serving.engine, workers.tasks\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ml_service.tools', "
        "'ml_service.training', 'rich', 'backend')))\n"
        "print(','.join(bad))"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
