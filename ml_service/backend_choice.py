"""Which inference backend each model runs on: ``ML_BACKEND=auto|torch|onnxruntime``.

``torch`` and ``onnxruntime`` are taken as asked (start-up fails, naming the reason, when ONNX
Runtime cannot run on the device). ``auto`` decides per device and model:

1. ONNX Runtime cannot run here (not installed; a GPU without its CUDA provider) → torch.
2. ``batch_sizes.json`` records both ``<model>/<variant>:torch`` and ``…:onnxruntime`` for this
   device at the model's input size → the one with the higher recorded throughput (images/s at
   its best batch size; ties go to torch).
3. Otherwise both are measured at warm-up (the profiler's quick calibration: batch 1 and 2,
   the backends' runs interleaved, see ``ml_service.profile.calibrate_backends``) and the faster
   is kept. The calibrated profiles go into the
   in-memory profile book, so the sizer uses them; ``python -m ml_service.profile`` records
   steadier figures.

A forced torch fast-path setting (``ML_PRECISION`` other than ``auto``, or ``ML_COMPILE=on``)
applies to the torch backend only: under ``auto`` it picks torch; with
``ML_BACKEND=onnxruntime`` it stops start-up (unless it only asks for fp32).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ml_service.backends import BACKENDS, onnxruntime_unavailable
from ml_service.device import DeviceProbe
from ml_service.errors import BackendUnavailable
from ml_service.pool import LoadedModel, build_module, make_backend
from ml_service.profile import budget_mb, calibrate_backends
from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.settings import EngineSettings
from models.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def profile_rate(profile: ModelProfile) -> float | None:
    """Recorded images/s at the profile's best batch size (None without points)."""
    at_best = [p for p in profile.points if p.batch_size == profile.best_batch_size]
    points = at_best or list(profile.points)
    return max(p.images_per_s for p in points) if points else None


def compare_profiles(profiles: dict[str, ModelProfile], source: str) -> BackendChoice | None:
    """The faster of the backends in ``profiles``; None unless every backend has a rate."""
    rates = {b: profile_rate(profiles[b]) for b in BACKENDS if b in profiles}
    known = {b: r for b, r in rates.items() if r is not None}
    if len(known) < len(BACKENDS):
        return None
    best = max(BACKENDS, key=lambda b: (known[b], b == "torch"))
    figures = ", ".join(f"{b} {known[b]:.1f} img/s" for b in BACKENDS)
    return BackendChoice(best, f"auto ({source}): {figures}")


def recorded_choice(book: ProfileBook, device_key: str, spec: ModelSpec) -> BackendChoice | None:
    """The faster backend as recorded for this device and model; None if not both recorded."""
    size = (spec.input_size, spec.input_size)
    profiles = {
        b: p
        for b in BACKENDS
        if (p := book.get(device_key, f"{spec.key}:{b}")) is not None and p.input_size == size
    }
    return compare_profiles(profiles, f"batch_sizes.json, {device_key}")


def torch_only_settings(settings: EngineSettings) -> str:
    """The fast-path settings that force something only the torch backend does ("" if none)."""
    forced = []
    if settings.precision not in ("auto", "fp32"):
        forced.append(f"ML_PRECISION={settings.precision}")
    if settings.compile == "on":
        forced.append("ML_COMPILE=on")
    return ", ".join(forced)


def load_chosen(
    spec: ModelSpec, settings: EngineSettings, probe: DeviceProbe, book: ProfileBook
) -> LoadedModel:
    """Load ``spec`` behind the backend ``ML_BACKEND`` resolves to (see the module docstring).

    Measurements taken here are put into ``book`` (in memory only).
    """
    module, weights = build_module(spec, settings)
    device = probe.torch_device

    def loaded(kind: str, reason: str) -> LoadedModel:
        backend = make_backend(kind, spec, module, weights, settings, device)
        return LoadedModel(spec, backend, weights, backend_reason=reason)

    forced = torch_only_settings(settings)
    if settings.backend == "onnxruntime" and forced:
        raise BackendUnavailable(f"ML_BACKEND=onnxruntime conflicts with {forced} (torch only)")
    if settings.backend != "auto":
        return loaded(settings.backend, f"ML_BACKEND={settings.backend}")
    if forced:
        return loaded("torch", f"auto: {forced} applies to the torch backend")
    problem = onnxruntime_unavailable(device)
    if problem is not None:
        return loaded("torch", f"auto: {problem}")
    choice = recorded_choice(book, probe.key, spec)
    if choice is not None:
        return loaded(choice.backend, choice.reason)
    # no record of both here: measure both now
    candidates = {b: loaded(b, "") for b in BACKENDS}
    budgets = {
        kind: budget_mb(probe, settings, model.backend.resident_bytes)
        for kind, model in candidates.items()
    }
    profiles = calibrate_backends(candidates, probe, budgets)
    for kind, model in candidates.items():
        book.put(probe.key, model.profile_key, profiles[kind])
    measured = compare_profiles(profiles, f"measured at warm-up on {probe.key}")
    if measured is None:  # no points at all: cannot happen with calibrate; stay on the default
        measured = BackendChoice("torch", "auto: measurement gave no figures")
    chosen = candidates[measured.backend]
    chosen.backend_reason = measured.reason
    return chosen


def load_models(
    settings: EngineSettings, probe: DeviceProbe, book: ProfileBook
) -> dict[str, LoadedModel]:
    """Every model in ``ML_MODELS``, each behind its chosen backend."""
    models = {}
    for name in settings.models:
        model = load_chosen(get_spec(name, settings.variant), settings, probe, book)
        log.info(
            "loaded %s on %s: %s (%s)",
            model.spec.key,
            probe.key,
            model.backend.name,
            model.backend_reason,
        )
        models[name] = model
    return models
