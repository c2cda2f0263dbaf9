"""The whole per-image path a worker runs, measured: what the planner must not leave out.

Inference alone says little on a CPU, where decoding, postprocessing (contours and per-object
metrics) and the result formats share the cores with the model. :func:`measure_pipeline` drives
an :class:`~ml_service.serving.engine.Engine` with ``callers`` concurrent submitters (as a worker's
task
threads do) on synthetic cell images encoded as PNG, and on each result builds what a worker
stores: the JSON result, GeoJSON, COCO and the PNG label mask. The profiler records the rate in
each model's profile (``pipeline_images_per_s``); the planner takes the lower of it and the
inference rate.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ml_service.profiles import ProfileBook
from ml_service.serving.engine import Engine
from ml_service.settings import EngineSettings
from ml_service.training.synthetic import generate_sample


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an image array (as OpenCV writes it)."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8/uint16 images
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def sample_pngs(size: int, n: int, seed: int = 7, kind: str | None = "cells") -> list[bytes]:
    """``n`` synthetic images of ``size``² pixels (``kind`` as ``generate_sample`` takes it:
    cells by default, None for a random kind each), PNG-encoded."""
    rng = np.random.default_rng(seed)
    return [encode_png(generate_sample(rng, size, kind).image) for _ in range(n)]


def _one(engine: Engine, model: str, data: bytes) -> None:
    result = engine.submit(data, model).result()
    result.to_json()
    result.to_geojson()
    result.to_coco()
    result.mask_png()


def measure_pipeline(
    engine: Engine, model: str, *, size: int, images: int = 32, callers: int = 8
) -> float:
    """Images per second through the engine and the worker's result formats, on ``images``
    synthetic cell images of ``size``² pixels."""
    return measure_pipeline_on(engine, model, sample_pngs(size, images), callers=callers)


def measure_pipeline_on(
    engine: Engine, model: str, encoded: list[bytes], *, callers: int = 8
) -> float:
    """Images per second for these encoded images (after one warm-up pass over a few)."""
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda d: _one(engine, model, d), encoded[:callers]))
        started = time.perf_counter()
        list(pool.map(lambda d: _one(engine, model, d), encoded))
        elapsed = time.perf_counter() - started
    return len(encoded) / elapsed


def record_service_efficiency(
    path: Path, device_key: str, profile_key: str, efficiency: float, pipeline: float
) -> bool:
    """Store what ``scripts/efficiency.py --record`` measured in one run on the same images: the
    engine's whole path and the service's share of it (end to end ÷ whole path), in that
    model's profile; False when it has none."""
    book = ProfileBook.load(path)
    profile = book.get(device_key, profile_key)
    if profile is None:
        return False
    updated = replace(
        profile, pipeline_images_per_s=round(pipeline, 2), service_efficiency=round(efficiency, 3)
    )
    book.put(device_key, profile_key, updated)
    book.save(path)
    return True


def record_pipeline_rates(
    book: ProfileBook, settings: EngineSettings, device_key: str, *, images: int = 64
) -> dict[str, float]:
    """Measure every model of ``settings`` through an engine that reads ``book`` (so it runs
    the runtime and configuration just chosen) and store the rate in the profile of the
    runtime it ran. Returns model → images/s."""
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch_sizes.json"
        book.save(path)
        with Engine.from_settings(settings.model_copy(update={"profiles_path": path})) as engine:
            for name, loaded in engine.pool.models.items():
                spec = loaded.spec
                rate = measure_pipeline(engine, name, size=spec.input_size, images=images)
                key = f"{spec.key}:{loaded.runtime.name}"
                profile = book.get(device_key, key)
                if profile is not None:
                    book.put(device_key, key, replace(profile, pipeline_images_per_s=rate))
                rates[name] = rate
    return rates
