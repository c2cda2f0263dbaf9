"""Fixtures of the engine tests: one ONNX export cache per test session (exports of the small
models take well under a second each; sharing them keeps the suite quick), never the repo's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_service.settings import EngineSettings


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, onnx_cache_dir: Path) -> EngineSettings:
    """CPU engine settings with a throw-away profile file (modules may override)."""
    return EngineSettings(
        device="cpu",
        max_queue_delay_ms=5,
        profiles_path=tmp_path_factory.mktemp("p") / "batch_sizes.json",
        onnx_cache_dir=onnx_cache_dir,
    )
