"""Benchmark, per model, in one run: eager PyTorch vs the chosen runtime, a locked
inference vs the dynamic batcher, and the torch fast path.

    python -m ml_service.tools.bench [--models hrnet,unet] [--callers 8] [--images 48] [--repeats
    15]
                               [--block 5] [--eager-max-batch 8]
                               [--device cuda] [--variant full] [--sections fastpath]
                               [--json out.json]

1. Runtimes (section ``backends``): the engine is built as the service builds it
   (``ML_BACKEND``, ``auto`` by default: per model the faster runtime recorded for this
   device). Beside it, every model is also loaded as eager fp32 PyTorch from the same weights.
   ``ms/img`` is per image at batch 1 and at the batch size the engine serves (its sizer's
   ceiling from the profile), eager fp32 measured at both and at every power of two up to
   ``--eager-max-batch`` (default 8): the median over ``--repeats`` rounds, each round timing
   every runtime and batch over ``--block`` calls in a row
   (``ml_service.serving.measure.median_latencies_s``), so a busy machine slows all alike; every
   model's latencies come before any engine path runs (an engine's device threads would leave
   PyTorch's OpenMP pool spinning throttled, see ``bench_backends``). ``speedup served`` is
   eager's best per-image figure (at whichever batch size gives it) over the chosen runtime's
   at the served batch; ``engine img/s`` runs ``--images`` PNG images through the full engine
   path (decode, normalise, batcher, postprocess) from ``--callers`` threads through an engine
   on eager PyTorch and through the engine on the chosen runtimes, in alternating chunks.
2. Batcher: baseline (a lock-per-model design) is one lock per model, batch size 1,
   ``--callers`` threads each running images through the model under its lock; the batcher run
   has the same threads submit the same inputs to the engine's ``DynamicBatcher`` (no lock,
   batches across callers, memory-aware size). Both use already-preprocessed model inputs, so
   they compare inference scheduling only, on the chosen runtime.
3. Fast path (``ml_service.tools.bench_fastpath``): on the torch runtime, lock-style batch 1
   fp32, batcher fp32, batcher with the recorded fast configuration, the whole path end to end
   on it (and its ratio to the batcher), and the stage times (decode, preprocess, H2D, compute,
   D2H, postprocess).

``--sections`` picks some of ``backends,batcher,fastpath`` (default all); ``--device`` and
``--variant`` override ``ML_DEVICE`` and ``ML_VARIANT`` (the GPU figures: ``--device cuda
--variant full``, with ``ML_ALLOW_RANDOM_WEIGHTS=1`` where the full weights are absent).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import logging
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml_service.profiles import ProfileBook
from ml_service.runtimes.torch.fastpath import allow_many_compiled_copies
from ml_service.serving.device import make_probe
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.serving.measure import DEFAULT_BLOCK, batch_sizes_up_to, median_latencies_s
from ml_service.serving.pool import LoadedModel, ModelPool
from ml_service.serving.threads import thread_plan
from ml_service.settings import EngineSettings, load_settings
from ml_service.tools.bench_fastpath import bench_fastpath_model, drive
from ml_service.tools.bench_report import print_report
from ml_service.tools.cli_args import positive_int
from ml_service.tools.pipeline_rate import sample_pngs

log = logging.getLogger(__name__)
EAGER_MAX_BATCH = 8  # the profiler's usual --max-batch on the CPU


def _inputs(model: LoadedModel, n: int, seed: int = 0) -> list[np.ndarray]:
    size = model.spec.input_size
    rng = np.random.default_rng(seed)
    return [rng.random((model.spec.in_channels, size, size), dtype=np.float32) for _ in range(n)]


def bench_model(engine: Engine, name: str, callers: int, images: int) -> dict[str, Any]:
    model = engine.pool.get(name)
    items = _inputs(model, images)
    lock = threading.Lock()

    def locked(x: np.ndarray) -> None:
        with lock:
            model.runtime.run(x[None])

    def batched(x: np.ndarray) -> None:
        engine.batchers[name].submit(x).result()

    drive(callers, items[: max(callers, 4)], locked)  # warm both paths
    drive(callers, items[: max(callers, 4)], batched)
    sizes_before = dict(engine.stats.batches)
    baseline = drive(callers, items, locked)
    batcher = drive(callers, items, batched)
    sizes = {
        n: engine.stats.batches.get(n, 0) - sizes_before.get(n, 0) for n in engine.stats.batches
    }
    mean_batch = sum(n * c for n, c in sizes.items()) / max(1, sum(sizes.values()))
    return {
        "model": model.spec.key,
        "backend": model.runtime.name,
        "ceiling": engine.sizer.ceiling(name),
        "baseline_img_s": round(baseline, 2),
        "batcher_img_s": round(batcher, 2),
        "ratio": round(batcher / baseline, 2),
        "mean_batch": round(mean_batch, 2),
    }


def _engines_img_s(
    engines: dict[str, Engine], name: str, images: list[bytes], callers: int, rounds: int = 4
) -> dict[str, float]:
    """Images/s of each engine over ``images`` from ``callers`` threads, full path. The images
    go in ``rounds`` chunks, each chunk through every engine in turn, so a change of machine
    load during the run is shared between the engines."""

    def seconds_for(engine: Engine, chunk: list[bytes]) -> float:
        def one(data: bytes) -> None:
            engine.submit(data, name, SegmentationParams(0.5, 0)).result()

        start = time.perf_counter()
        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(one, chunk))
        return time.perf_counter() - start

    for engine in engines.values():  # warm up the path
        seconds_for(engine, images[:callers])
    seconds = dict.fromkeys(engines, 0.0)
    for r in range(rounds):
        chunk = images[r::rounds]
        for key, engine in engines.items():
            seconds[key] += seconds_for(engine, chunk)
    return {key: len(images) / s for key, s in seconds.items()}


def backend_latencies(
    engine: Engine,
    eager: Engine,
    name: str,
    *,
    repeats: int,
    block: int = DEFAULT_BLOCK,
    eager_max_batch: int = EAGER_MAX_BATCH,
) -> dict[str, Any]:
    """Eager PyTorch (``eager``) vs the runtime ``engine`` chose for ``name``, per image: at
    batch 1, and at the batch size the engine serves (its sizer's ceiling) where that is larger.
    Eager fp32 is measured at 1, the served size and every power of two up to
    ``eager_max_batch``; its best per image is the served comparison's baseline, since batching
    helps it too (hrnet/small: 2–3× from batch 1 to 8). Each runtime is timed in blocks of
    ``block`` calls, the blocks alternating, from this thread (see :func:`bench_backends` for
    why it must come first)."""
    chosen = engine.pool.get(name)
    served = engine.sizer.ceiling(name)
    chosen_sizes = sorted({1, served})
    eager_sizes = sorted({*chosen_sizes, *batch_sizes_up_to(eager_max_batch)})
    runs: dict[str, functools.partial[np.ndarray]] = {}
    for n in eager_sizes:
        x = np.stack(_inputs(chosen, n, seed=1))
        runs[f"eager@{n}"] = functools.partial(eager.pool.get(name).runtime.run, x)
        if n in chosen_sizes:
            runs[f"chosen@{n}"] = functools.partial(chosen.runtime.run, x)
    latency = median_latencies_s(runs, chosen.runtime.device, repeats, block=block)
    per_img = {key: 1000 * s / int(key.split("@")[1]) for key, s in latency.items()}
    eager_best_batch = min(eager_sizes, key=lambda n: per_img[f"eager@{n}"])
    eager_best = per_img[f"eager@{eager_best_batch}"]
    return {
        "model": chosen.spec.key,
        "backend": chosen.runtime.name,
        "backend_config": chosen.runtime.label,
        "backend_reason": chosen.runtime_reason,
        "eager_ms_per_img": round(per_img["eager@1"], 2),
        "chosen_ms_per_img": round(per_img["chosen@1"], 2),
        "speedup": round(per_img["eager@1"] / per_img["chosen@1"], 2),
        "served_batch": served,
        "eager_ms_per_img_served_batch": round(per_img[f"eager@{served}"], 2),
        "chosen_ms_per_img_served_batch": round(per_img[f"chosen@{served}"], 2),
        "eager_best_batch": eager_best_batch,
        "eager_best_ms_per_img": round(eager_best, 2),
        "served_speedup": round(eager_best / per_img[f"chosen@{served}"], 2),
    }


def bench_backends(
    engine: Engine,
    eager: Engine,
    *,
    callers: int,
    images: int,
    repeats: int,
    block: int = DEFAULT_BLOCK,
    eager_max_batch: int = EAGER_MAX_BATCH,
) -> list[dict[str, Any]]:
    """Per model: :func:`backend_latencies`, then images/s through each engine's whole path.

    Every model's latencies are measured before any engine path runs: a path runs the models
    from the engines' device threads, and once PyTorch's OpenMP pool has served a thread other
    than the main one it manages more threads than there are cores and spins only briefly, so
    every later call of a small model pays thread wake-ups (hrnet/small eager at batch 1: 13 ms
    before, 25 ms after; ``scripts.intraop_threads``). Measured first, both runtimes run as the
    profiler measured them when it chose the configuration."""
    rows = [
        backend_latencies(
            engine, eager, name, repeats=repeats, block=block, eager_max_batch=eager_max_batch
        )
        for name in engine.batchers
    ]
    for name, row in zip(engine.batchers, rows, strict=True):
        pngs = sample_pngs(engine.pool.get(name).spec.input_size, images, seed=20_000, kind=None)
        e2e = _engines_img_s({"eager": eager, "chosen": engine}, name, pngs, callers)
        row["eager_engine_img_s"] = round(e2e["eager"], 2)
        row["chosen_engine_img_s"] = round(e2e["chosen"], 2)
        row["engine_ratio"] = round(e2e["chosen"] / e2e["eager"], 2)
    return rows


SECTIONS = ("backends", "batcher", "fastpath")


def run(
    settings: EngineSettings,
    *,
    callers: int,
    images: int,
    repeats: int,
    sections: tuple[str, ...] = SECTIONS,
    block: int = DEFAULT_BLOCK,
    eager_max_batch: int = EAGER_MAX_BATCH,
) -> dict[str, Any]:
    """The ``sections`` for every model in ``settings``; the report ``main`` prints."""
    report: dict[str, Any] = {"backends": [], "results": [], "fastpath": []}
    if "backends" in sections or "batcher" in sections:
        report.update(
            _run_backends(settings, callers, images, repeats, sections, block, eager_max_batch)
        )
    probe = make_probe(settings.device)
    if "fastpath" in sections:
        book = ProfileBook.load(settings.profiles_path)
        report["fastpath"] = [
            bench_fastpath_model(settings, n, probe, book, callers=callers, images=images)
            for n in settings.models
        ]
    return {
        "device": probe.key,
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "threads": dataclasses.asdict(thread_plan(settings, probe.kind)),
        "host": platform.node(),
        "callers": callers,
        "images": images,
        "repeats": repeats,
        "block": block,
        **report,
    }


def _run_backends(
    settings: EngineSettings,
    callers: int,
    images: int,
    repeats: int,
    sections: tuple[str, ...],
    block: int = DEFAULT_BLOCK,
    eager_max_batch: int = EAGER_MAX_BATCH,
) -> dict[str, Any]:
    engine = Engine.from_settings(settings)
    eager_settings = settings.model_copy(
        update={"backend": "torch", "precision": "auto", "compile": "auto"}
    )
    eager_models = ModelPool.load(eager_settings, engine.probe.torch_device, "torch").models
    eager = Engine(
        eager_settings,
        eager_models,
        engine.probe,
        profiles=ProfileBook.load(settings.profiles_path),
    )
    for m in eager.pool.models.values():  # the baseline is plain fp32, whatever was recorded
        m.runtime.apply_profile(None, eager_settings)
        m.config_reason = "bench baseline: eager fp32, contiguous"
    try:
        eager.warm_up()
        names = list(engine.batchers)
        backends = (
            bench_backends(
                engine,
                eager,
                callers=callers,
                images=images,
                repeats=repeats,
                block=block,
                eager_max_batch=eager_max_batch,
            )
            if "backends" in sections
            else []
        )
        rows = [bench_model(engine, n, callers, images) for n in names if "batcher" in sections]
    finally:
        eager.close()
        engine.close()
    return {"backends": backends, "results": rows}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Eager PyTorch vs chosen runtime; locked batch-1 baseline vs dynamic batcher"
    )
    parser.add_argument("--models", help="comma-separated (default: ML_MODELS)")
    parser.add_argument("--callers", type=positive_int, default=8)
    parser.add_argument("--images", type=positive_int, default=48)
    parser.add_argument("--repeats", type=positive_int, default=15, help="timed rounds per runtime")
    parser.add_argument(
        "--block", type=positive_int, default=DEFAULT_BLOCK, help="calls timed in a row per round"
    )
    parser.add_argument(
        "--eager-max-batch",
        type=positive_int,
        default=EAGER_MAX_BATCH,
        help="eager fp32's baseline: its best per image at batch 1, 2, 4, ... up to this",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", help="overrides ML_DEVICE (cpu, cuda, cuda:N)")
    parser.add_argument("--variant", choices=("small", "full"), help="overrides ML_VARIANT")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS)
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    allow_many_compiled_copies()  # eager, chosen and fast-path engines side by side
    if args.models:
        settings = settings.model_copy(update={"models": tuple(args.models.split(","))})
    if args.device:
        settings = settings.model_copy(update={"device": args.device})
    if args.variant:
        settings = settings.model_copy(update={"variant": args.variant})
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    report = {
        "command": "python -m ml_service.tools.bench " + " ".join(argv or sys.argv[1:]),
        **run(
            settings,
            callers=args.callers,
            images=args.images,
            repeats=args.repeats,
            block=args.block,
            sections=sections,
            eager_max_batch=args.eager_max_batch,
        ),
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
