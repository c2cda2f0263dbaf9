"""Which inference backend each model runs on: ``ML_BACKEND=auto|torch|onnxruntime|openvino``.

``torch``, ``onnxruntime`` and ``openvino`` are taken as asked (start-up fails, naming the
reason, when the backend cannot run on the device). ``auto`` decides per device and model among
the backends that run here (torch always; ONNX Runtime where installed, on a GPU only with its
CUDA provider; OpenVINO where installed, on the CPU only):

1. Only torch runs here → torch.
2. ``batch_sizes.json`` records every one of them (``<model>/<variant>:torch``,
   ``…:onnxruntime``, ``…:openvino``) for this device at the model's input size → the one with
   the higher recorded throughput (images/s at its best batch size; ties go to torch, then in
   the order above).
3. Otherwise they are measured at warm-up (the profiler's quick calibration: batch 1 and 2,
   the backends' runs interleaved, see ``ml_service.tools.profile.calibrate_backends``; OpenVINO in
   its recorded precision, else fp32, since its bf16 needs the profiler's mask check) and the
   fastest is kept. The
   calibrated profiles go into the in-memory profile book, so the sizer uses them;
   ``python -m ml_service.tools.profile`` records steadier figures.

A forced torch fast-path setting (``ML_PRECISION`` other than ``auto``, or ``ML_COMPILE=on``)
applies to the torch backend only: under ``auto`` it picks torch; with another
``ML_BACKEND`` it stops start-up (unless it only asks for fp32).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ml_service.errors import BackendUnavailable
from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.runtimes.backends import BACKENDS
from ml_service.serving.calibration import budget_mb, calibrate_backends
from ml_service.serving.device import DeviceProbe
from ml_service.serving.fastpath_setup import openvino_precision
from ml_service.serving.pool import LoadedModel, backend_unavailable, build_module, make_backend
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


def fastest(rates: dict[str, float]) -> str:
    """The backend with the highest rate; ties go to the earlier one in ``BACKENDS`` (torch,
    then onnxruntime, then openvino)."""
    order = {b: -i for i, b in enumerate(BACKENDS)}
    return max(rates, key=lambda b: (rates[b], order.get(b, -len(BACKENDS))))


def compare_profiles(
    profiles: dict[str, ModelProfile], source: str, kinds: Sequence[str] = BACKENDS
) -> BackendChoice | None:
    """The fastest of ``kinds`` in ``profiles``; None unless every one of them has a rate."""
    rates = {b: profile_rate(profiles[b]) for b in kinds if b in profiles}
    known = {b: r for b, r in rates.items() if r is not None}
    if len(known) < len(kinds):
        return None
    best = fastest(known)
    figures = ", ".join(f"{b} {known[b]:.1f} img/s" for b in kinds)
    return BackendChoice(best, f"auto ({source}): {figures}")


def recorded_choice(
    book: ProfileBook, device_key: str, spec: ModelSpec, kinds: Sequence[str] = BACKENDS
) -> BackendChoice | None:
    """The fastest of ``kinds`` as recorded for this device and model; None unless every one
    is recorded."""
    size = (spec.input_size, spec.input_size)
    profiles = {
        b: p
        for b in kinds
        if (p := book.get(device_key, f"{spec.key}:{b}")) is not None and p.input_size == size
    }
    return compare_profiles(profiles, f"batch_sizes.json, {device_key}", kinds)


def backends_here(device: torch.device) -> list[str]:
    """The backends that run on ``device`` in this process (torch always)."""
    return [b for b in BACKENDS if backend_unavailable(b, device) is None]


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
        precision = "fp32"
        if kind == "openvino":  # compiled once, in the precision the engine will run
            recorded = book.get(probe.key, f"{spec.key}:openvino")
            precision, _ = openvino_precision(settings, spec, recorded)
        backend = make_backend(kind, spec, module, weights, settings, device, precision)
        return LoadedModel(spec, backend, weights, backend_reason=reason)

    forced = torch_only_settings(settings)
    if settings.backend not in ("auto", "torch") and forced:
        raise BackendUnavailable(
            f"ML_BACKEND={settings.backend} conflicts with {forced} (torch only)"
        )
    if settings.backend != "auto":
        return loaded(settings.backend, f"ML_BACKEND={settings.backend}")
    if forced:
        return loaded("torch", f"auto: {forced} applies to the torch backend")
    kinds = backends_here(device)
    if kinds == ["torch"]:
        problems = "; ".join(
            p for b in BACKENDS if (p := backend_unavailable(b, device)) is not None
        )
        return loaded("torch", f"auto: {problems}")
    choice = recorded_choice(book, probe.key, spec, kinds)
    if choice is not None:
        return loaded(choice.backend, choice.reason)
    # not every backend recorded here: measure them now
    candidates = {b: loaded(b, "") for b in kinds}
    budgets = {
        kind: budget_mb(probe, settings, model.backend.resident_bytes)
        for kind, model in candidates.items()
    }
    profiles = calibrate_backends(candidates, probe, budgets)
    for kind, model in candidates.items():
        book.put(probe.key, model.profile_key, profiles[kind])
    measured = compare_profiles(profiles, f"measured at warm-up on {probe.key}", kinds)
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
