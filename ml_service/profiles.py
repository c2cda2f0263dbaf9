"""Batch profiles: ``batch_sizes.json``, written by the profiler and read by the sizer.

Layout (schema version 1)::

    {"schema_version": 1,
     "devices": {"<device key>": {"<model>/<variant>": {
         "backend": "torch", "dtype": "float32", "input_size": [256, 256],
         "points": [{"batch_size": 1, "peak_mb": 120.5, "latency_ms": 55.1}, ...],
         "intercept_mb": 80.1, "slope_mb": 40.4,
         "best_batch_size": 4, "max_batch_size": 16,
         "memory_method": "cpu-vmhwm", "measured_at": "2026-11-23T20:00:00+00:00",
         "fastpath": {"chosen": {"precision": "bf16", "channels_last": true, "compile": "off"},
                      "candidates": [{"precision": "fp32", "channels_last": false,
                                      "compile": "off", "batch_size": 1, "latency_ms": 30.2,
                                      "peak_mb": 52.0, "mask_iou": 1.0, "compile_s": 0.0,
                                      "rejected": ""}, ...],
                      "notes": ["compile not measured on cpu (--compile to include it)"]}}}}}

The fitted line predicts a batch's peak memory above resident weights:
``peak_mb(n) = intercept_mb + slope_mb × n``.

``fastpath`` (optional; torch profiles) records the fast-path
configuration the profiler chose (``ml_service.runtimes.torch.fastpath``) and every candidate it
measured; the
points and the line are those of the chosen configuration, and ``dtype`` names its precision.
Files without it load as before (the engine then runs fp32), and engines that predate it ignore
it, so the schema version stays 1.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


class ProfileFileError(ValueError):
    """``batch_sizes.json`` is unreadable or has another schema version."""


@dataclass(frozen=True)
class BatchPoint:
    batch_size: int
    peak_mb: float
    latency_ms: float

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.latency_ms if self.latency_ms > 0 else 0.0


@dataclass(frozen=True)
class FastPathCandidate:
    """One fast-path configuration as the profiler measured it at ``batch_size``."""

    precision: str
    channels_last: bool
    compile: str
    batch_size: int
    latency_ms: float
    peak_mb: float
    mask_iou: float  # lowest per-image IoU of its masks against fp32's (equivalence images)
    compile_s: float = 0.0  # first run (compilation) time, seconds
    rejected: str = ""  # why it may not be chosen ("" when it may)

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.latency_ms if self.latency_ms > 0 else 0.0


@dataclass(frozen=True)
class FastPathRecord:
    """The profiler's fast-path choice for one model on one device (``chosen``: precision,
    channels_last, compile), the candidates measured, and notes (what was not measured)."""

    chosen: dict[str, Any]
    candidates: tuple[FastPathCandidate, ...] = ()
    notes: tuple[str, ...] = ()

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.chosen.items())), self.candidates, self.notes))

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": dict(self.chosen),
            "candidates": [asdict(c) for c in self.candidates],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FastPathRecord:
        return cls(
            chosen=dict(data["chosen"]),
            candidates=tuple(FastPathCandidate(**c) for c in data.get("candidates", [])),
            notes=tuple(str(n) for n in data.get("notes", [])),
        )


@dataclass(frozen=True)
class ModelProfile:
    """Measured cost of one model on one device and runtime."""

    intercept_mb: float
    slope_mb: float
    best_batch_size: int
    max_batch_size: int
    backend: str = "torch"  # the runtime's registered name (the file's key: "backend")
    dtype: str = "float32"
    input_size: tuple[int, int] = (0, 0)
    points: tuple[BatchPoint, ...] = field(default=())
    memory_method: str = ""
    measured_at: str = ""
    source: str = "measured"  # measured | calibrated | default
    # torch only: the fast-path choice (ml_service.runtimes.torch.fastpath)
    fastpath: FastPathRecord | None = None
    # whole per-image path through the engine (decode → model → postprocess → the worker's result
    # formats) with concurrent callers, on this device's cores (ml_service.tools.pipeline_rate)
    pipeline_images_per_s: float | None = None
    # end to end through the service ÷ the whole path above (scripts/efficiency.py --record)
    service_efficiency: float | None = None

    def peak_mb(self, batch_size: int) -> float:
        return self.intercept_mb + self.slope_mb * batch_size

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["points"] = [asdict(p) for p in self.points]
        for optional in ("pipeline_images_per_s", "service_efficiency"):
            if data[optional] is None:
                del data[optional]
        if self.fastpath is None:
            del data["fastpath"]
        else:
            data["fastpath"] = self.fastpath.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelProfile:
        return cls(
            intercept_mb=float(data["intercept_mb"]),
            slope_mb=float(data["slope_mb"]),
            best_batch_size=int(data["best_batch_size"]),
            max_batch_size=int(data["max_batch_size"]),
            backend=str(data.get("backend", "torch")),
            dtype=str(data.get("dtype", "float32")),
            input_size=tuple(data.get("input_size", (0, 0))),  # type: ignore[arg-type]
            points=tuple(BatchPoint(**p) for p in data.get("points", [])),
            memory_method=str(data.get("memory_method", "")),
            measured_at=str(data.get("measured_at", "")),
            source=str(data.get("source", "measured")),
            fastpath=FastPathRecord.from_json(data["fastpath"]) if data.get("fastpath") else None,
            pipeline_images_per_s=(
                float(data["pipeline_images_per_s"]) if data.get("pipeline_images_per_s") else None
            ),
            service_efficiency=(
                float(data["service_efficiency"]) if data.get("service_efficiency") else None
            ),
        )


def fit_line(points: list[BatchPoint] | tuple[BatchPoint, ...]) -> tuple[float, float]:
    """Least-squares ``peak_mb = intercept + slope × n``; slope and intercept kept ≥ 0.

    One point gives a line through the origin (all cost per image, the conservative reading).
    """
    if not points:
        raise ValueError("no points to fit")
    if len({p.batch_size for p in points}) == 1:
        p = points[0]
        return 0.0, p.peak_mb / p.batch_size
    n = np.array([p.batch_size for p in points], dtype=float)
    peak = np.array([p.peak_mb for p in points], dtype=float)
    slope, intercept = np.polyfit(n, peak, 1)
    slope = max(float(slope), 1e-3)
    # keep the line above every measured point so predictions never undershoot them
    intercept = max(0.0, float(np.max(peak - slope * n)))
    return intercept, slope


def best_batch_size(points: list[BatchPoint] | tuple[BatchPoint, ...], budget_mb: float) -> int:
    """The batch size with the highest measured images/s whose peak fits ``budget_mb``.

    Ties (within 3%) go to the smaller batch: less latency for the same throughput.
    """
    fitting = [p for p in points if p.peak_mb <= budget_mb] or [
        min(points, key=lambda p: p.batch_size)
    ]
    top = max(p.images_per_s for p in fitting)
    return min(p.batch_size for p in fitting if p.images_per_s >= 0.97 * top)


class ProfileBook:
    """All profiles of a ``batch_sizes.json``: ``{device key: {model key: profile}}``."""

    def __init__(self, devices: dict[str, dict[str, ModelProfile]] | None = None) -> None:
        self.devices: dict[str, dict[str, ModelProfile]] = devices or {}

    def get(self, device_key: str, model_key: str) -> ModelProfile | None:
        return self.devices.get(device_key, {}).get(model_key)

    def put(self, device_key: str, model_key: str, profile: ModelProfile) -> None:
        self.devices.setdefault(device_key, {})[model_key] = profile

    @classmethod
    def load(cls, path: Path) -> ProfileBook:
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileFileError(f"cannot read {path}: {exc}") from None
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ProfileFileError(
                f"{path} has schema_version {raw.get('schema_version')!r}, "
                f"this engine reads {SCHEMA_VERSION}"
            )
        try:
            devices = {
                dev: {key: ModelProfile.from_json(p) for key, p in models.items()}
                for dev, models in raw.get("devices", {}).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileFileError(f"malformed profile in {path}: {exc!r}") from None
        return cls(devices)

    def save(self, path: Path) -> None:
        """Write atomically, devices and models sorted for stable diffs."""
        data = {
            "schema_version": SCHEMA_VERSION,
            "devices": {
                dev: {key: self.devices[dev][key].to_json() for key in sorted(self.devices[dev])}
                for dev in sorted(self.devices)
            },
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)


def default_profile(input_size: int, device_kind: str) -> ModelProfile:
    """Conservative stand-in for a device with no measured profile (calibrated at warm-up).

    Assumes 400 float32 activations alive per input pixel, which overestimates every model in
    the registry, and a ceiling of 4 on GPUs and 1 on CPUs.
    """
    per_image_mb = input_size * input_size * 4 * 400 / (1024 * 1024)
    ceiling = 4 if device_kind == "cuda" else 1
    return ModelProfile(
        intercept_mb=per_image_mb,
        slope_mb=per_image_mb,
        best_batch_size=ceiling,
        max_batch_size=ceiling,
        input_size=(input_size, input_size),
        source="default",
    )
