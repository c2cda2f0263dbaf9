"""Fixtures shared across test packages: ``service`` (a real gateway + worker on loopback).

Child processes the tests start (``python -m cellseg_client``, ``lint-imports``) import this
checkout's packages: the repository root and ``client/`` lead their ``PYTHONPATH``.
"""

import os
from pathlib import Path

import pytest

from tests.harness import service

ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(ROOT / "client"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

__all__ = ["service"]

SLOW_FOLDERS = ("service", "web")
"""Test folders whose every test runs the whole service (gateway, workers, a browser)."""
SLOW_FIXTURES = {"service", "small_gateway", "nginx_front", "engines"}
"""Fixtures that start service processes or load real models behind engines."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` what starts the service or loads engines (``make test-quick`` skips it);
    modules that load, compile or measure models mark themselves."""
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT).parts
        if (len(parts) > 1 and parts[1] in SLOW_FOLDERS) or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
