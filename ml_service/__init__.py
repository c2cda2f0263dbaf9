"""CellSeg Serve's inference engine, as layers (each imports only those below it):

- ``tools/``, ``training/``: profiler, bench, planner, accuracy benchmark, demo; training and
  synthetic data;
- ``serving/``: the request path a worker runs per image (engine, batcher, sizer, pool, CPU
  stages, start-up calibration);
- ``runtimes/``: what runs one batch on a device (PyTorch, ONNX Runtime, OpenVINO);
- ``results``, ``imaging/``: image IO, pre/postprocessing, output formats;
- ``settings``, ``errors``, ``profiles``: the bottom.

The engine's public face is exported here, loaded on first use so that importing, say,
``ml_service.errors`` does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_service.errors import EngineError
    from ml_service.results import SegmentationParams, SegmentationResult
    from ml_service.serving.engine import Engine

__all__ = ["Engine", "EngineError", "SegmentationParams", "SegmentationResult"]

_HOME = {
    "Engine": "ml_service.serving.engine",
    "EngineError": "ml_service.errors",
    "SegmentationParams": "ml_service.results",
    "SegmentationResult": "ml_service.results",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'ml_service' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOME[name]), name)
