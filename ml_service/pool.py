"""The model pool: each model in ``ML_MODELS`` loaded once per process, verified, on device."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ml_service.backends import InferenceBackend, TorchBackend
from ml_service.errors import UnknownModel
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

    @property
    def profile_key(self) -> str:
        """Key of this model's entry in ``batch_sizes.json`` (model, variant and backend)."""
        return f"{self.spec.key}:{self.backend.name}"

    def describe_weights(self) -> dict[str, Any]:
        if self.weights.get("random"):
            return {"random": True}
        keys = ("sha256", "dtype", "num_parameters", "validation", "created")
        return {k: self.weights.get(k) for k in keys}


def load_model(spec: ModelSpec, settings: EngineSettings, device: torch.device) -> LoadedModel:
    """Build, load verified weights (or random ones when allowed and missing), move to device."""
    module = spec.build()
    paths = weight_paths(spec, settings.weights_dir)
    if not paths.tensors.exists() and settings.allow_random_weights:
        log.warning(
            "%s: no weights at %s; RANDOM weights (benchmark only)", spec.key, paths.tensors
        )
        weights: dict[str, Any] = {"random": True}
    else:
        try:
            weights = load_weights(module, spec, settings.weights_dir)
        except WeightsError as exc:
            hint = "" if settings.allow_random_weights else " (ML_ALLOW_RANDOM_WEIGHTS=1 to bench)"
            raise WeightsError(f"{exc}{hint}") from None
    return LoadedModel(spec, TorchBackend(module, device), weights)


class ModelPool:
    """Loaded models by name."""

    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self.models = models

    @classmethod
    def load(cls, settings: EngineSettings, device: torch.device) -> ModelPool:
        models = {}
        for name in settings.models:
            models[name] = load_model(get_spec(name, settings.variant), settings, device)
            log.info("loaded %s on %s", models[name].spec.key, device)
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
