"""The torch fast path wired into an engine: each torch model's configuration resolved at
start-up (``ml_service.runtimes.fastpath.resolve``: the profile's recorded choice, or
``ML_PRECISION``/``ML_COMPILE``), the process-wide TF32 switch, the warm-up runs that compile
every batch size the sizer may pick, and the model's fast-path entry in ``engine.describe()``.

torch.compile's cache lives in ``ML_COMPILE_CACHE_DIR`` (``TORCHINDUCTOR_CACHE_DIR`` when that
is set), so a restarted worker compiles from it in seconds. Compilation is not done in the
background while the model serves: torch.compile is not thread-safe against other module calls
(its tracer patches ``nn.Module.__call__`` process-wide while it traces; tried 2026-11-24, three
models compiling in background threads hung the worker).

OpenVINO models get their precision the same way (the profile's recorded choice, or
``ML_OPENVINO_PRECISION``; :func:`resolve_openvino_precision`). ONNX Runtime passes through
untouched, except for warm-up, which every model gets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ml_service.profiles import ModelProfile
from ml_service.runtimes import fastpath
from ml_service.runtimes.backends import TorchBackend
from ml_service.runtimes.openvino import OpenVinoBackend, native_bf16
from ml_service.serving.pool import LoadedModel
from ml_service.settings import EngineSettings
from models.registry import ModelSpec

log = logging.getLogger(__name__)

WARM_UP_RUNS_CUDA_GRAPHS = 3
"""Runs of each batch size of a model compiled with CUDA graphs (recorded on a later run than
the first); other compiled models compile on the first run of each size, so they run it once."""


def use_compile_cache(settings: EngineSettings) -> None:
    """Point torch.compile's cache at ``ML_COMPILE_CACHE_DIR`` unless the environment names
    another (``TORCHINDUCTOR_CACHE_DIR``). Inductor writes its default (a per-user directory
    under /tmp) into that variable the first time it is asked, which importing torch may do:
    that value is not a choice and is replaced; inductor reads the variable at each use."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(settings.compile_cache_dir.resolve())


def configure_model(
    model: LoadedModel, profile: ModelProfile | None, settings: EngineSettings
) -> None:
    """Torch models: run the fast-path configuration recorded in ``profile`` (measured by the
    profiler; ignored when it is for another input size), or the one ``ML_PRECISION`` /
    ``ML_COMPILE`` force; OpenVINO models: the precision recorded or forced
    (``ML_OPENVINO_PRECISION``). The reason goes to ``model.fastpath_reason``."""
    if isinstance(model.backend, OpenVinoBackend):
        precision, reason = openvino_precision(settings, model.spec, profile)
        if precision != model.backend.precision:
            model.backend.configure(precision)
        model.fastpath_reason = reason
        log.info("%s: precision %s (%s)", model.profile_key, precision, reason)
        return
    if not isinstance(model.backend, TorchBackend):
        return
    if profile is not None and profile.input_size != (model.spec.input_size,) * 2:
        profile = None
    config, reason = fastpath.resolve(
        settings.precision, settings.compile, profile, model.backend.device
    )
    if config.compile != "off":
        use_compile_cache(settings)
    if config != model.backend.config:
        model.backend.configure(config)
    model.fastpath_reason = reason
    log.info("%s: fast path %s (%s)", model.profile_key, config.label, reason)


def openvino_precision(
    settings: EngineSettings, spec: ModelSpec, profile: ModelProfile | None
) -> tuple[str, str]:
    """:func:`resolve_openvino_precision` for ``spec`` on this CPU (a profile for another input
    size is ignored). The model pool compiles an OpenVINO model in it, so
    :func:`configure_model` finds it compiled as it should be."""
    if profile is not None and profile.input_size != (spec.input_size,) * 2:
        profile = None
    return resolve_openvino_precision(settings.openvino_precision, profile, native_bf16)


def resolve_openvino_precision(
    setting: str, profile: ModelProfile | None, bf16_here: Callable[[], bool]
) -> tuple[str, str]:
    """An OpenVINO model's precision and why: ``ML_OPENVINO_PRECISION`` when not ``auto`` (a
    forced bf16 on a CPU without bf16 instructions then fails at compilation, naming it), else
    the profile's recorded choice, else fp32. A recorded bf16 on a CPU without bf16 (another
    machine with the same device key) falls back to fp32."""
    if setting != "auto":
        return setting, f"ML_OPENVINO_PRECISION={setting}"
    if profile is None or profile.fastpath is None:
        return "fp32", "no recorded choice"
    precision = str(profile.fastpath.chosen["precision"])
    if precision.startswith("bf16") and not bf16_here():
        return "fp32", f"recorded {precision}, but this CPU has no bf16 instructions"
    return precision, f"recorded in batch_sizes.json: {precision}"


def set_process_tf32(models: Iterable[LoadedModel], device_kind: str) -> None:
    """On CUDA: TF32 on when any torch model runs ``tf32``, off otherwise (process-wide)."""
    if device_kind != "cuda":
        return
    fastpath.set_tf32(
        any(
            isinstance(m.backend, TorchBackend) and m.backend.config.precision == "tf32"
            for m in models
        )
    )


def warm_up_sizes(model: LoadedModel, ceiling: int) -> tuple[list[int], int]:
    """Batch sizes to run at warm-up and how often: 1 and the ceiling once; every size the
    sizer may pick (1 … ceiling) for a compiled model, once each, or
    :data:`WARM_UP_RUNS_CUDA_GRAPHS` times with CUDA graphs."""
    backend = model.backend
    mode = backend.config.compile if isinstance(backend, TorchBackend) else "off"
    if mode == "off":
        return sorted({1, ceiling}), 1
    runs = WARM_UP_RUNS_CUDA_GRAPHS if mode == "reduce-overhead" else 1
    return list(range(1, ceiling + 1)), runs


def warm_up_model(model: LoadedModel, ceiling: int) -> None:
    """Run :func:`warm_up_sizes` on zeros, the path requests take (device threshold where the
    backend has one), so no request pays for allocation, kernel selection or compilation."""
    size = model.spec.input_size
    backend = model.backend
    sizes, runs = warm_up_sizes(model, ceiling)
    for n in sizes:
        x = np.zeros((n, model.spec.in_channels, size, size), np.float32)
        masks = getattr(backend, "returns_masks", False)
        for _ in range(runs):
            if masks:
                backend.run(x, np.full(n, 0.5, np.float32))
            else:
                backend.run(x)


def label(model: LoadedModel) -> str:
    """A model's configuration in short: ``bf16+channels_last+compile:default`` (torch), ``bf16``
    (OpenVINO), "" (ONNX Runtime)."""
    if isinstance(model.backend, TorchBackend):
        return model.backend.config.label
    if isinstance(model.backend, OpenVinoBackend):
        return model.backend.precision
    return ""


def describe(model: LoadedModel) -> dict[str, Any] | None:
    """A torch or OpenVINO model's configuration and why (``engine.describe()``); None for
    others."""
    if isinstance(model.backend, OpenVinoBackend):
        return {
            "precision": model.backend.precision,
            "fp32_layers": model.backend.fp32_layers,
            "reason": model.fastpath_reason,
        }
    if not isinstance(model.backend, TorchBackend):
        return None
    return {**model.backend.config.to_json(), "reason": model.fastpath_reason}
