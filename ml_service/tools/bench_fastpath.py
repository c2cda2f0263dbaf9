"""The bench's fast-path section, per model on the torch runtime, in one run:

- *lock-style*: one lock per model, batch 1, fp32 (contiguous, not compiled), ``callers``
  threads on preprocessed inputs;
- *batcher fp32*: the same inputs through an engine's ``DynamicBatcher`` on fp32;
- *batcher fast*: the same through an engine running the configuration recorded in
  ``batch_sizes.json`` (or forced by ``ML_PRECISION``/``ML_COMPILE``);
- *end to end*: PNG bytes through the fast engine's whole path (decode, preprocess, batcher,
  device threshold, postprocess; in ``ML_CPU_WORKERS`` processes when set), and its ratio to
  *batcher fast* (target: ≥ 0.9, the CPU side keeping up with the device);
- *stage times*, one image at a time, median ms per image: decode, preprocess, H2D, compute,
  D2H (``TorchRuntime.run_staged``, device synchronised between stages; H2D and D2H are None
  on the CPU, where there are no copies), postprocess.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ml_service.imaging.imageio import decode_image
from ml_service.imaging.preprocess import prepare
from ml_service.profiles import ProfileBook
from ml_service.runtimes.base import InferenceRuntime
from ml_service.runtimes.torch import TorchRuntime
from ml_service.runtimes.torch.fastpath import FP32
from ml_service.serving.batcher import DynamicBatcher
from ml_service.serving.cpu_stages import postprocess_outputs
from ml_service.serving.device import DeviceProbe
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.serving.pool import load_model
from ml_service.settings import EngineSettings
from ml_service.tools.fastpath_choice import probe_batch
from ml_service.tools.pipeline_rate import sample_pngs
from models.registry import get_spec


def drive(callers: int, items: list[Any], run_one: Callable[[Any], object]) -> float:
    """Images/s when ``callers`` threads share ``items``, each calling ``run_one(item)`` (an
    exception in a call is raised here, not lost in its thread)."""
    shares = [items[i::callers] for i in range(callers)]
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda share: [run_one(x) for x in share], shares))
    return len(items) / (time.perf_counter() - start)


def _torch(runtime: InferenceRuntime) -> TorchRuntime:
    if not isinstance(runtime, TorchRuntime):
        raise TypeError(f"the fast-path bench needs the torch runtime, got {runtime.name}")
    return runtime


def _torch_engine(
    settings: EngineSettings, name: str, probe: DeviceProbe, book: ProfileBook
) -> Engine:
    spec = get_spec(name, settings.variant)
    model = load_model(spec, settings, probe.torch_device, "torch")
    engine = Engine(settings, {name: model}, probe, profiles=book)
    return engine


def stage_times(engine: Engine, name: str, pngs: list[bytes]) -> dict[str, float | None]:
    """Median ms per image of each stage, one image at a time (see the module docstring)."""
    model = engine.pool.get(name)
    runtime = _torch(model.runtime)
    size, overlap = model.spec.input_size, engine.settings.tile_overlap
    rows: dict[str, list[float]] = {
        k: [] for k in ("decode", "preprocess", "h2d", "compute", "d2h", "postprocess")
    }
    on_cpu = runtime.device.type != "cuda"
    for data in pngs:
        t0 = time.perf_counter()
        image = decode_image(data, engine.settings.max_image_pixels)
        t1 = time.perf_counter()
        inputs, restore = prepare(image, size, overlap)
        rows["decode"].append(1000 * (t1 - t0))
        rows["preprocess"].append(1000 * (time.perf_counter() - t1))
        outputs = []
        stage = {"h2d": 0.0, "compute": 0.0, "d2h": 0.0}
        for tile in inputs:
            out, times = runtime.run_staged(tile[None, None], np.array([0.5], np.float32))
            outputs.append(out[0])
            for key in stage:
                stage[key] += times.get(key) or 0.0
        for key, seconds in stage.items():
            rows[key].append(1000 * seconds)
        _, _, post_ms = postprocess_outputs(outputs, restore, 0.5, 0)
        rows["postprocess"].append(post_ms)
    return {
        k: (None if on_cpu and k in ("h2d", "d2h") else round(statistics.median(v), 2))
        for k, v in rows.items()
    }


def bench_fastpath_model(
    settings: EngineSettings,
    name: str,
    probe: DeviceProbe,
    book: ProfileBook,
    *,
    callers: int,
    images: int,
) -> dict[str, Any]:
    """One model's row of the fast-path section (see the module docstring)."""
    spec = get_spec(name, settings.variant)
    base = _torch_engine(settings, name, probe, book)
    fast = _torch_engine(settings, name, probe, book)
    try:
        fp32_runtime = _torch(base.pool.get(name).runtime)
        fp32_runtime.configure(FP32)
        base.warm_up()
        fast.warm_up()
        fast_runtime = _torch(fast.pool.get(name).runtime)
        items = list(probe_batch(spec, images))  # (1, S, S) each
        lock = threading.Lock()

        def locked(x: np.ndarray) -> None:
            with lock:
                fp32_runtime.run(x[None])

        warm = items[: max(1, min(callers, len(items)))]
        drive(callers, warm, locked)
        seed = drive(callers, items, locked)
        rates = {}
        for key, engine in (("batcher_fp32", base), ("batcher_fast", fast)):
            batcher = engine.batchers[name]

            def batched(x: np.ndarray, b: DynamicBatcher = batcher) -> None:
                b.submit(x).result()

            drive(callers, warm, batched)
            before = dict(engine.stats.batches)
            rates[key] = drive(callers, items, batched)
            sizes = {n: c - before.get(n, 0) for n, c in engine.stats.batches.items()}
            rates[f"{key}_mean_batch"] = sum(n * c for n, c in sizes.items()) / max(
                1, sum(sizes.values())
            )
        pngs = sample_pngs(spec.input_size, images, seed=20_000, kind=None)
        params = SegmentationParams(0.5, 0)
        drive(callers, pngs[: len(warm)], lambda d: fast.submit(d, name, params).result())
        e2e = drive(callers, pngs, lambda d: fast.submit(d, name, params).result())
        stages = stage_times(fast, name, pngs[: min(4, len(pngs))])
        return {
            "model": spec.key,
            "input_size": spec.input_size,
            "fast_config": fast_runtime.config.label,
            "fast_reason": fast.pool.get(name).config_reason,
            "cpu_workers": fast.cpu_workers,
            "seed_lock_b1_fp32_img_s": round(seed, 2),
            "batcher_fp32_img_s": round(rates["batcher_fp32"], 2),
            "batcher_fp32_mean_batch": round(rates["batcher_fp32_mean_batch"], 2),
            "batcher_fast_img_s": round(rates["batcher_fast"], 2),
            "batcher_fast_mean_batch": round(rates["batcher_fast_mean_batch"], 2),
            "end_to_end_fast_img_s": round(e2e, 2),
            "e2e_over_engine": round(e2e / rates["batcher_fast"], 2),
            "fast_over_seed": round(rates["batcher_fast"] / seed, 2),
            "stage_ms": stages,
        }
    finally:
        base.close()
        fast.close()
