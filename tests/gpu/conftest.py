"""GPU tests: every test under ``tests/gpu/`` (and any test marked ``gpu``) needs CUDA and is
skipped, with the reason, where ``torch.cuda.is_available()`` is False.

Fixtures build engines on ``cuda:0`` with throw-away profile and export folders, so a run never
touches the repository's ``batch_sizes.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml_service.settings import EngineSettings

HERE = Path(__file__).resolve().parent
NO_CUDA = "needs CUDA: torch.cuda.is_available() is False"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = torch.cuda.is_available()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
        if not cuda and item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))


def engine_settings(tmp: Path, **update: object) -> EngineSettings:
    """Engine settings on ``cuda:0``: torch, eager fp32, CPU stages in threads (``update``
    overrides any field)."""
    base: dict[str, object] = {
        "device": "cuda",
        "backend": "torch",
        "precision": "fp32",
        "compile": "off",
        "device_preprocess": "off",
        "cpu_workers": 0,
        "max_queue_delay_ms": 5,
        "profiles_path": tmp / "batch_sizes.json",
        "onnx_cache_dir": tmp / "onnx",
        "compile_cache_dir": tmp / "inductor",
    }
    return EngineSettings(**{**base, **update})  # type: ignore[arg-type]


def cell_images(n: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic cell images (uint8 or uint16) of ``size`` pixels a side."""
    from ml_service.training.synthetic import generate_sample

    rng = np.random.default_rng(seed)
    return [generate_sample(rng, size, "cells").image for _ in range(n)]
