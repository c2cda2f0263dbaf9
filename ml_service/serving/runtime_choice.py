"""Which inference runtime each model runs on: ``ML_BACKEND`` is ``auto`` or the name of a
registered runtime (``ml_service.runtimes.registry.RUNTIMES``: torch, onnxruntime, openvino).

A named runtime is taken as asked (start-up fails, naming the reason, when it is not registered
or cannot run on the device). ``auto`` decides per device and model among the runtimes that run
here (each says why not through its ``available``: ONNX Runtime where installed, on a GPU only
with its CUDA provider; OpenVINO where installed, on the CPU only; torch always):

1. Only one runs here → that one.
2. ``batch_sizes.json`` records every one of them (``<model>/<variant>:torch``,
   ``…:onnxruntime``, ``…:openvino``) for this device at the model's input size → the one with
   the higher recorded throughput (images/s at its best batch size; ties go to the earlier one
   in the registry).
3. Otherwise they are measured at warm-up (the profiler's quick calibration: batch 1 and 2,
   the runtimes' runs interleaved, see ``ml_service.serving.calibration.calibrate_runtimes``;
   each built from its recorded profile, e.g. OpenVINO in its recorded precision, else fp32,
   since its bf16 needs the profiler's mask check) and the fastest is kept. The calibrated
   profiles go into the in-memory profile book, so the sizer uses them;
   ``python -m ml_service.tools.profile`` records steadier figures.

Settings only one runtime honours (its ``forced_by``: torch's ``ML_PRECISION`` other than
``auto``/``fp32`` and ``ML_COMPILE=on``) pick that runtime under ``auto`` and stop start-up
with another ``ML_BACKEND``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.runtimes.registry import RUNTIMES, runtime_names
from ml_service.serving.calibration import budget_mb, calibrate_runtimes
from ml_service.serving.device import DeviceProbe
from ml_service.serving.pool import LoadedModel, build_module, build_runtime
from ml_service.settings import EngineSettings
from models.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    reason: str


def profile_rate(profile: ModelProfile) -> float | None:
    """Recorded images/s at the profile's best batch size (None without points)."""
    at_best = [p for p in profile.points if p.batch_size == profile.best_batch_size]
    points = at_best or list(profile.points)
    return max(p.images_per_s for p in points) if points else None


def fastest(rates: dict[str, float]) -> str:
    """The runtime with the highest rate; ties go to the earlier one in the registry (torch,
    then onnxruntime, then openvino)."""
    names = runtime_names()
    order = {b: -i for i, b in enumerate(names)}
    return max(rates, key=lambda b: (rates[b], order.get(b, -len(names))))


def compare_profiles(
    profiles: dict[str, ModelProfile], source: str, kinds: Sequence[str] | None = None
) -> RuntimeChoice | None:
    """The fastest of ``kinds`` (default: every registered runtime) in ``profiles``; None
    unless every one of them has a rate."""
    kinds = runtime_names() if kinds is None else kinds
    rates = {b: profile_rate(profiles[b]) for b in kinds if b in profiles}
    known = {b: r for b, r in rates.items() if r is not None}
    if len(known) < len(kinds):
        return None
    best = fastest(known)
    figures = ", ".join(f"{b} {known[b]:.1f} img/s" for b in kinds)
    return RuntimeChoice(best, f"auto ({source}): {figures}")


def recorded_choice(
    book: ProfileBook, device_key: str, spec: ModelSpec, kinds: Sequence[str] | None = None
) -> RuntimeChoice | None:
    """The fastest of ``kinds`` (default: every registered runtime) as recorded for this
    device and model; None unless every one is recorded."""
    kinds = runtime_names() if kinds is None else kinds
    size = (spec.input_size, spec.input_size)
    profiles = {
        b: p
        for b in kinds
        if (p := book.get(device_key, f"{spec.key}:{b}")) is not None and p.input_size == size
    }
    return compare_profiles(profiles, f"batch_sizes.json, {device_key}", kinds)


def runtimes_here(device: torch.device) -> dict[str, str | None]:
    """Every registered runtime → why it cannot run on ``device`` in this process (None: it
    can)."""
    return {name: runtime.available(device) for name, runtime in RUNTIMES.items()}


def check_backend_setting(settings: EngineSettings) -> None:
    """Stop start-up when ``ML_BACKEND`` names no registered runtime."""
    if settings.backend != "auto" and settings.backend not in RUNTIMES:
        raise RuntimeUnavailable(
            f"ML_BACKEND={settings.backend!r} names no runtime; valid: auto, " + ", ".join(RUNTIMES)
        )


def forced_runtime(settings: EngineSettings) -> tuple[str, str] | None:
    """The runtime whose own settings are forced (``forced_by``), and which; None if none.

    Raises:
        RuntimeUnavailable: ``ML_BACKEND`` names another runtime than the one forced.
    """
    for name, runtime in RUNTIMES.items():
        forced = runtime.forced_by(settings)
        if not forced:
            continue
        if settings.backend not in ("auto", name):
            raise RuntimeUnavailable(
                f"ML_BACKEND={settings.backend} conflicts with {forced} ({name} only)"
            )
        return name, forced
    return None


def load_chosen(
    spec: ModelSpec, settings: EngineSettings, probe: DeviceProbe, book: ProfileBook
) -> LoadedModel:
    """Load ``spec`` behind the runtime ``ML_BACKEND`` resolves to (see the module docstring).

    Measurements taken here are put into ``book`` (in memory only).
    """
    check_backend_setting(settings)
    module, weights = build_module(spec, settings)
    device = probe.torch_device

    def loaded(name: str, reason: str) -> LoadedModel:
        recorded = book.get(probe.key, f"{spec.key}:{name}")
        runtime = build_runtime(name, spec, module, weights, settings, device, recorded)
        return LoadedModel(spec, runtime, weights, runtime_reason=reason)

    forced = forced_runtime(settings)
    if settings.backend != "auto":
        return loaded(settings.backend, f"ML_BACKEND={settings.backend}")
    if forced is not None:
        name, what = forced
        return loaded(name, f"auto: {what} applies to the {name} runtime")
    problems = runtimes_here(device)
    kinds = [name for name, problem in problems.items() if problem is None]
    if len(kinds) == 1:
        reasons = "; ".join(p for p in problems.values() if p is not None)
        return loaded(kinds[0], f"auto: {reasons}")
    choice = recorded_choice(book, probe.key, spec, kinds)
    if choice is not None:
        return loaded(choice.runtime, choice.reason)
    # not every runtime recorded here: measure them now
    candidates = {b: loaded(b, "") for b in kinds}
    budgets = {
        kind: budget_mb(probe, settings, model.runtime.resident_bytes)
        for kind, model in candidates.items()
    }
    profiles = calibrate_runtimes(candidates, probe, budgets)
    for kind, model in candidates.items():
        book.put(probe.key, model.profile_key, profiles[kind])
    measured = compare_profiles(profiles, f"measured at warm-up on {probe.key}", kinds)
    if measured is None:  # no points at all: cannot happen with calibrate; stay on the first
        measured = RuntimeChoice(kinds[0], "auto: measurement gave no figures")
    chosen = candidates[measured.runtime]
    chosen.runtime_reason = measured.reason
    return chosen


def load_models(
    settings: EngineSettings, probe: DeviceProbe, book: ProfileBook
) -> dict[str, LoadedModel]:
    """Every model in ``ML_MODELS``, each behind its chosen runtime."""
    check_backend_setting(settings)
    models = {}
    for name in settings.models:
        model = load_chosen(get_spec(name, settings.variant), settings, probe, book)
        log.info(
            "loaded %s on %s: %s (%s)",
            model.spec.key,
            probe.key,
            model.runtime.name,
            model.runtime_reason,
        )
        models[name] = model
    return models
