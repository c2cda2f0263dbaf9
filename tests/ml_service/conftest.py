"""Fixtures of the engine tests: one ONNX export cache per test session (exports of the small
models take well under a second each; sharing them keeps the suite quick), never the repo's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")
