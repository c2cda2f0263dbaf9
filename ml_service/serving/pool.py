"""The model pool: each model in ``ML_MODELS`` loaded once per process, verified, behind an
inference runtime on the device (``ml_service.runtimes.registry``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ml_service.errors import RuntimeUnavailable, UnknownModel
from ml_service.profiles import ModelProfile
from ml_service.runtimes.base import BuildRequest, InferenceRuntime
from ml_service.runtimes.registry import get_runtime
from ml_service.serving.threads import thread_plan
from ml_service.settings import EngineSettings
from models.errors import WeightsError
from models.registry import ModelSpec, get_spec
from models.weights import load_weights, weight_paths

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    runtime: InferenceRuntime
    weights: dict[str, Any] = field(default_factory=dict)  # sidecar; {"random": True} if none
    runtime_reason: str = ""  # why this runtime (ML_BACKEND, a profile, a measurement)
    config_reason: str = ""  # why the runtime's configuration (its apply_profile)

    @property
    def profile_key(self) -> str:
        """Key of this model's entry in ``batch_sizes.json`` (model, variant and runtime)."""
        return f"{self.spec.key}:{self.runtime.name}"

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


def for_input_size(profile: ModelProfile | None, spec: ModelSpec) -> ModelProfile | None:
    """``profile`` when it was measured at ``spec``'s input size, else None."""
    if profile is None or profile.input_size != (spec.input_size,) * 2:
        return None
    return profile


def build_runtime(
    name: str,
    spec: ModelSpec,
    module: nn.Module,
    weights: dict[str, Any],
    settings: EngineSettings,
    device: torch.device,
    profile: ModelProfile | None = None,
) -> InferenceRuntime:
    """``module``'s weights behind the runtime registered as ``name`` on ``device``, built
    with ``thread_plan``'s threads and the recorded ``profile`` (ignored when it is for another
    input size).

    Raises:
        RuntimeUnavailable: ``name`` is not registered, or cannot run on ``device`` here.
    """
    runtime = get_runtime(name)
    problem = runtime.available(device)
    if problem is not None:
        raise RuntimeUnavailable(f"{spec.key}: ML_BACKEND={name} but {problem}")
    plan = thread_plan(settings, "cpu" if device.type == "cpu" else "cuda")
    request = BuildRequest(
        spec,
        module,
        None if weights.get("random") else str(weights["sha256"]),
        settings,
        device,
        threads=plan.onnx,
        streams=plan.concurrency,
        profile=for_input_size(profile, spec),
    )
    return runtime.build(request)


def load_model(
    spec: ModelSpec, settings: EngineSettings, device: torch.device, runtime: str = "torch"
) -> LoadedModel:
    """Build, load verified weights, and put them behind ``runtime`` on ``device``."""
    module, weights = build_module(spec, settings)
    return LoadedModel(
        spec,
        build_runtime(runtime, spec, module, weights, settings, device),
        weights,
        runtime_reason=f"requested: {runtime}",
    )


class ModelPool:
    """Loaded models by name."""

    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self.models = models

    @classmethod
    def load(
        cls, settings: EngineSettings, device: torch.device, runtime: str | None = None
    ) -> ModelPool:
        """Every model in ``settings.models`` behind ``runtime`` (default ``ML_BACKEND``, where
        ``auto`` means torch here: the engine resolves ``auto`` per model from the recorded
        profiles, see ``ml_service.serving.runtime_choice``)."""
        kind = runtime or (settings.backend if settings.backend != "auto" else "torch")
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
        return sum(m.runtime.resident_bytes for m in self.models.values())
