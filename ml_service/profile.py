"""Profile the models on this device and write ``batch_sizes.json``.

    python -m ml_service.profile [--models unet,hrnet] [--max-batch 16] [--repeats 5]

For each model and batch size (1, 2, 4, ...) it measures peak memory (see ``ml_service.measure``
for how) and latency (median of ``--repeats`` runs after a warm-up run), fits
``peak = intercept + slope × n``, picks the best-throughput batch size that fits the device's
budget, and writes the device's entry, keeping other devices' entries. The engine calls
``calibrate`` at warm-up for a device that has no entry.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime

import numpy as np
from rich.console import Console
from rich.table import Table

from ml_service.device import MB, DeviceProbe, make_probe
from ml_service.measure import measure_peak, median_latency_s
from ml_service.pool import LoadedModel, ModelPool
from ml_service.profiles import (
    BatchPoint,
    ModelProfile,
    ProfileBook,
    best_batch_size,
    fit_line,
)
from ml_service.settings import EngineSettings, load_settings

log = logging.getLogger(__name__)


def measure_points(
    model: LoadedModel,
    batch_sizes: list[int],
    *,
    repeats: int,
    budget_mb: float,
    seed: int = 0,
) -> tuple[list[BatchPoint], str]:
    """Measure peak MB and median latency per batch size; stop past the memory budget."""
    size = model.spec.input_size
    rng = np.random.default_rng(seed)
    points: list[BatchPoint] = []
    method = ""
    for n in batch_sizes:
        x = rng.random((n, model.spec.in_channels, size, size), dtype=np.float32)

        def run(x: np.ndarray = x) -> object:
            return model.backend.run(x)

        run()  # warm-up: allocator, kernels
        peak = measure_peak(run, model.backend.device)
        method = peak.method
        latency = median_latency_s(run, model.backend.device, repeats, warmup=0)
        point = BatchPoint(n, round(peak.peak_bytes / MB, 1), round(latency * 1000, 2))
        points.append(point)
        log.info(
            "%s batch %d: peak %.1f MB, %.1f ms", model.spec.key, n, point.peak_mb, point.latency_ms
        )
        if point.peak_mb > budget_mb:
            break
    return points, method


def profile_from_points(
    model: LoadedModel, points: list[BatchPoint], budget_mb: float, method: str, source: str
) -> ModelProfile:
    intercept, slope = fit_line(points)
    max_batch = max(1, int((budget_mb - intercept) // slope)) if slope > 0 else 1
    measured_max = max(p.batch_size for p in points)
    return ModelProfile(
        intercept_mb=round(intercept, 1),
        slope_mb=round(slope, 1),
        best_batch_size=min(best_batch_size(points, budget_mb), max_batch),
        max_batch_size=min(max_batch, measured_max),
        backend=model.backend.name,
        dtype="float32",
        input_size=(model.spec.input_size, model.spec.input_size),
        points=tuple(points),
        memory_method=method,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=source,
    )


def budget_mb(probe: DeviceProbe, settings: EngineSettings, resident_bytes: int) -> float:
    reading = probe.read()
    usable = reading.total - reading.foreign
    if settings.memory_limit_gb is not None:
        usable = min(usable, int(settings.memory_limit_gb * 1024**3))
    return max(0.0, (usable - settings.memory_safety_mb * MB - resident_bytes) / MB)


def calibrate(model: LoadedModel, probe: DeviceProbe, budget: float) -> ModelProfile:
    """Quick profile for a device with no entry: batch 1, 2 (and 4 on a GPU)."""
    sizes = [1, 2, 4] if probe.kind == "cuda" else [1, 2]
    points, method = measure_points(model, sizes, repeats=2, budget_mb=budget)
    return profile_from_points(model, points, budget, method, source="calibrated")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile models; write batch_sizes.json")
    parser.add_argument("--models", help="comma-separated (default: ML_MODELS)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if args.models:
        settings = settings.model_copy(update={"models": tuple(args.models.split(","))})
    probe = make_probe(settings.device)
    pool = ModelPool.load(settings, probe.torch_device)
    budget = budget_mb(probe, settings, pool.resident_bytes())
    sizes = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= args.max_batch]
    book = ProfileBook.load(settings.profiles_path)
    table = Table(title=f"{probe.key}: budget {budget:.0f} MB")
    for col in ("model", "batch", "peak MB", "ms/batch", "img/s"):
        table.add_column(col, justify="right")
    for name in pool.names():
        model = pool.get(name)
        points, method = measure_points(model, sizes, repeats=args.repeats, budget_mb=budget)
        profile = profile_from_points(model, points, budget, method, source="measured")
        book.put(probe.key, model.profile_key, profile)
        for p in points:
            star = " *" if p.batch_size == profile.best_batch_size else ""
            table.add_row(
                model.profile_key,
                f"{p.batch_size}{star}",
                f"{p.peak_mb:.1f}",
                f"{p.latency_ms:.1f}",
                f"{p.images_per_s:.2f}",
            )
    Console().print(table)
    if not args.dry_run:
        book.save(settings.profiles_path)
        log.info("wrote %s (device %s)", settings.profiles_path, probe.key)


if __name__ == "__main__":
    main()
