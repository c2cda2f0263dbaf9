"""Start-up calibration: quick batch profiles for a device that has no entry in
``batch_sizes.json``, and the memory budget the sizer works within.

The profiler (``ml_service.tools.profile``) uses the same measurements for its full sweep.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from ml_service.profiles import BatchPoint, FastPathRecord, ModelProfile, best_batch_size, fit_line
from ml_service.serving.device import MB, DeviceProbe
from ml_service.serving.measure import measure_peak, median_latencies_s
from ml_service.serving.pool import LoadedModel
from ml_service.settings import EngineSettings

log = logging.getLogger(__name__)


def measure_runtimes(
    models: Mapping[str, LoadedModel],
    batch_sizes: list[int],
    *,
    repeats: int,
    budget_mb: Mapping[str, float],
    seed: int = 0,
    block: int = 1,
) -> dict[str, tuple[list[BatchPoint], str]]:
    """Peak MB and median latency per batch size of each model (e.g. one spec behind each
    runtime); a model stops past its memory budget. Latencies are taken interleaved, ``block``
    runs of each model in turn (``median_latencies_s``), so the comparison between them is fair
    on a machine shared with other work."""
    rng = np.random.default_rng(seed)
    results: dict[str, tuple[list[BatchPoint], str]] = {key: ([], "") for key in models}
    active = dict(models)
    for n in batch_sizes:
        if not active:
            break
        runs = {}
        for key, model in active.items():
            size = model.spec.input_size
            x = rng.random((n, model.spec.in_channels, size, size), dtype=np.float32)
            runs[key] = functools.partial(model.runtime.run, x)
        peaks = {}
        for key, run in runs.items():
            run()  # warm-up: allocator, kernels
            runtime = active[key].runtime
            peaks[key] = measure_peak(run, runtime.device, runtime.torch_allocator)
        device = next(iter(active.values())).runtime.device
        latencies = median_latencies_s(runs, device, repeats, block=block)
        for key, model in list(active.items()):
            point = BatchPoint(
                n, round(peaks[key].peak_bytes / MB, 1), round(latencies[key] * 1000, 2)
            )
            results[key][0].append(point)
            results[key] = (results[key][0], peaks[key].method)
            log.info(
                "%s:%s batch %d: peak %.1f MB, %.1f ms",
                model.spec.key,
                model.runtime.name,
                n,
                point.peak_mb,
                point.latency_ms,
            )
            if point.peak_mb > budget_mb[key]:
                del active[key]
    return results


def profile_from_points(
    model: LoadedModel,
    points: list[BatchPoint],
    budget_mb: float,
    method: str,
    source: str,
    fastpath: FastPathRecord | None = None,
) -> ModelProfile:
    intercept, slope = fit_line(points)
    max_batch = max(1, int((budget_mb - intercept) // slope)) if slope > 0 else 1
    measured_max = max(p.batch_size for p in points)
    return ModelProfile(
        intercept_mb=round(intercept, 1),
        slope_mb=round(slope, 1),
        best_batch_size=min(best_batch_size(points, budget_mb), max_batch),
        max_batch_size=min(max_batch, measured_max),
        backend=model.runtime.name,
        dtype=model.runtime.dtype_name,
        input_size=(model.spec.input_size, model.spec.input_size),
        points=tuple(points),
        memory_method=method,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=source,
        fastpath=fastpath,
    )


def budget_mb(probe: DeviceProbe, settings: EngineSettings, resident_bytes: int) -> float:
    reading = probe.read()
    usable = reading.total - reading.foreign
    if settings.memory_limit_gb is not None:
        usable = min(usable, int(settings.memory_limit_gb * 1024**3))
    return max(0.0, (usable - settings.memory_safety_mb * MB - resident_bytes) / MB)


def calibrate_runtimes(
    models: Mapping[str, LoadedModel], probe: DeviceProbe, budget_mb: Mapping[str, float]
) -> dict[str, ModelProfile]:
    """Quick profiles for a device with no entry: batch 1, 2 (and 4 on a GPU), 3 interleaved
    runs each."""
    sizes = [1, 2, 4] if probe.kind == "cuda" else [1, 2]
    measured = measure_runtimes(models, sizes, repeats=3, budget_mb=budget_mb)
    return {
        key: profile_from_points(models[key], points, budget_mb[key], method, source="calibrated")
        for key, (points, method) in measured.items()
    }


def calibrate(model: LoadedModel, probe: DeviceProbe, budget: float) -> ModelProfile:
    """``calibrate_runtimes`` for one model."""
    return calibrate_runtimes({"model": model}, probe, {"model": budget})["model"]
