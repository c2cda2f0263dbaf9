"""The model pool: each model in ``ML_MODELS`` loaded once per process, verified, behind an
inference backend on the device."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ml_service.errors import BackendUnavailable, UnknownModel
from ml_service.runtimes.backends import (
    BACKENDS,
    InferenceBackend,
    OnnxRuntimeBackend,
    TorchBackend,
    module_bytes,
    onnxruntime_unavailable,
)
from ml_service.runtimes.onnx_export import ensure_onnx
from ml_service.runtimes.openvino import OpenVinoBackend, openvino_unavailable
from ml_service.serving.threads import thread_plan
from ml_service.settings import EngineSettings
from models.errors import WeightsError
from models.registry import ModelSpec, get_spec
from models.weights import load_weights, weight_paths

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    backend: InferenceBackend
    weights: dict[str, Any] = field(default_factory=dict)  # sidecar; {"random": True} if none
    backend_reason: str = ""  # why this backend (ML_BACKEND, a profile, a measurement)
    # torch: why its fast-path configuration (ml_service.runtimes.fastpath)
    fastpath_reason: str = ""

    @property
    def profile_key(self) -> str:
        """Key of this model's entry in ``batch_sizes.json`` (model, variant and backend)."""
        return f"{self.spec.key}:{self.backend.name}"

    def describe_weights(self) -> dict[str, Any]:
        if self.weights.get("random"):
            return {"random": True}
        keys = ("sha256", "dtype", "num_parameters", "validation", "created")
        return {k: self.weights.get(k) for k in keys}


def build_module(spec: ModelSpec, settings: EngineSettings) -> tuple[nn.Module, dict[str, Any]]:
    """Build on the CPU in eval mode, load verified weights (or random ones when allowed and
    missing); returns the module and the weights' sidecar."""
    module = spec.build().eval()
    paths = weight_paths(spec, settings.weights_dir)
    if not paths.tensors.exists() and settings.allow_random_weights:
        log.warning(
            "%s: no weights at %s; RANDOM weights (benchmark only)", spec.key, paths.tensors
        )
        return module, {"random": True}
    try:
        return module, load_weights(module, spec, settings.weights_dir)
    except WeightsError as exc:
        hint = "" if settings.allow_random_weights else " (ML_ALLOW_RANDOM_WEIGHTS=1 to bench)"
        raise WeightsError(f"{exc}{hint}") from None


def backend_unavailable(kind: str, device: torch.device) -> str | None:
    """Why backend ``kind`` cannot run on ``device`` in this process; None when it can."""
    if kind == "onnxruntime":
        return onnxruntime_unavailable(device)
    if kind == "openvino":
        return openvino_unavailable(device)
    return None


def make_backend(
    kind: str,
    spec: ModelSpec,
    module: nn.Module,
    weights: dict[str, Any],
    settings: EngineSettings,
    device: torch.device,
    precision: str = "fp32",
) -> InferenceBackend:
    """A ``kind`` backend running ``module``'s weights on ``device``.

    ONNX Runtime and OpenVINO (in ``precision``) run an export of the module (cached in
    ``ML_ONNX_CACHE_DIR``, rebuilt when stale or corrupt; see ``ml_service.runtimes.onnx_export``)
    with
    ``thread_plan``'s threads; the torch backend runs the module itself (moved to ``device``).
    """
    if kind == "torch":
        return TorchBackend(module, device)
    if kind not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {kind!r}; valid: {', '.join(BACKENDS)}")
    problem = backend_unavailable(kind, device)
    if problem is not None:
        raise BackendUnavailable(f"{spec.key}: ML_BACKEND={kind} but {problem}")
    source = None if weights.get("random") else str(weights["sha256"])
    artifact = ensure_onnx(module, spec, source, settings.onnx_cache_dir)
    kind_of = "cpu" if device.type == "cpu" else "cuda"
    plan = thread_plan(settings, kind_of)
    if kind == "openvino":
        return OpenVinoBackend(
            artifact.data,
            device,
            input_size=spec.input_size,
            threads=plan.onnx,
            streams=plan.concurrency,
            precision=precision,
            resident_bytes=module_bytes(module),
        )
    return OnnxRuntimeBackend(
        artifact.data, device, threads=plan.onnx, resident_bytes=module_bytes(module)
    )


def load_model(
    spec: ModelSpec, settings: EngineSettings, device: torch.device, backend: str = "torch"
) -> LoadedModel:
    """Build, load verified weights, and put them behind a ``backend`` on ``device``."""
    module, weights = build_module(spec, settings)
    return LoadedModel(
        spec,
        make_backend(backend, spec, module, weights, settings, device),
        weights,
        backend_reason=f"requested: {backend}",
    )


class ModelPool:
    """Loaded models by name."""

    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self.models = models

    @classmethod
    def load(
        cls, settings: EngineSettings, device: torch.device, backend: str | None = None
    ) -> ModelPool:
        """Every model in ``settings.models`` behind ``backend`` (default ``ML_BACKEND``, where
        ``auto`` means torch here: the engine resolves ``auto`` per model from the recorded
        profiles, see ``ml_service.serving.runtime_choice``)."""
        kind = backend or (settings.backend if settings.backend != "auto" else "torch")
        models = {}
        for name in settings.models:
            models[name] = load_model(get_spec(name, settings.variant), settings, device, kind)
            log.info("loaded %s on %s (%s)", models[name].spec.key, device, kind)
        return cls(models)

    def get(self, name: str) -> LoadedModel:
        try:
            return self.models[name]
        except KeyError:
            loaded = ", ".join(sorted(self.models)) or "none"
            raise UnknownModel(f"model {name!r} is not loaded; loaded models: {loaded}") from None

    def names(self) -> list[str]:
        return list(self.models)

    def resident_bytes(self) -> int:
        return sum(m.backend.resident_bytes for m in self.models.values())
