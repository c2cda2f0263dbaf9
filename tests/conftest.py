"""Fixtures shared across test packages: ``service`` (a real gateway + worker on loopback).

Child processes the tests start (``python -m cellseg_client``, ``lint-imports``) import this
checkout's packages: the repository root and ``client/`` lead their ``PYTHONPATH``.
"""

import os
from pathlib import Path

from tests.harness import service

ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(ROOT / "client"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

__all__ = ["service"]
