"""Benchmark: seed-style locked inference vs the dynamic batcher, per model, in one run.

    python -m ml_service.bench [--models hrnet,unet] [--callers 8] [--images 48] [--json out.json]

Baseline (the seed service's design): one lock per model, batch size 1, ``--callers`` threads
each running images through the model under its lock. Batcher: the same threads submit the same
inputs to the engine's ``DynamicBatcher`` (no lock, batches across callers, memory-aware size).
Both use already-preprocessed model inputs so the figures compare inference scheduling only.
"""

from __future__ import annotations

import argparse
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
from rich.console import Console
from rich.table import Table

from ml_service.engine import Engine
from ml_service.pool import LoadedModel
from ml_service.settings import load_settings

log = logging.getLogger(__name__)


def _inputs(model: LoadedModel, n: int, seed: int = 0) -> list[np.ndarray]:
    size = model.spec.input_size
    rng = np.random.default_rng(seed)
    return [rng.random((model.spec.in_channels, size, size), dtype=np.float32) for _ in range(n)]


def _drive(callers: int, items: list[np.ndarray], run_one: Any) -> float:
    """Images/s when ``callers`` threads share ``items``, each calling ``run_one(item)``."""
    shares = [items[i::callers] for i in range(callers)]
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda share: [run_one(x) for x in share], shares))
    return len(items) / (time.perf_counter() - start)


def bench_model(engine: Engine, name: str, callers: int, images: int) -> dict[str, Any]:
    model = engine.pool.get(name)
    items = _inputs(model, images)
    lock = threading.Lock()

    def locked(x: np.ndarray) -> None:
        with lock:
            model.backend.run(x[None])

    def batched(x: np.ndarray) -> None:
        engine.batchers[name].submit(x).result()

    _drive(callers, items[: max(callers, 4)], locked)  # warm both paths
    _drive(callers, items[: max(callers, 4)], batched)
    sizes_before = dict(engine.stats.batches)
    baseline = _drive(callers, items, locked)
    batcher = _drive(callers, items, batched)
    sizes = {
        n: engine.stats.batches.get(n, 0) - sizes_before.get(n, 0) for n in engine.stats.batches
    }
    mean_batch = sum(n * c for n, c in sizes.items()) / max(1, sum(sizes.values()))
    return {
        "model": model.spec.key,
        "backend": model.backend.name,
        "ceiling": engine.sizer.ceiling(name),
        "baseline_img_s": round(baseline, 2),
        "batcher_img_s": round(batcher, 2),
        "ratio": round(batcher / baseline, 2),
        "mean_batch": round(mean_batch, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Locked batch-1 baseline vs dynamic batcher")
    parser.add_argument("--models", help="comma-separated (default: ML_MODELS)")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if args.models:
        settings = settings.model_copy(update={"models": tuple(args.models.split(","))})
    engine = Engine.from_settings(settings)
    try:
        rows = [bench_model(engine, name, args.callers, args.images) for name in engine.batchers]
    finally:
        engine.close()
    report = {
        "command": "python -m ml_service.bench " + " ".join(argv or sys.argv[1:]),
        "device": engine.probe.key,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "callers": args.callers,
        "images": args.images,
        "results": rows,
    }
    table = Table(title=f"{report['device']}: {args.callers} callers, {args.images} images")
    for col in ("model", "ceiling", "mean batch", "locked b=1 img/s", "batcher img/s", "ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["model"],
            str(r["ceiling"]),
            f"{r['mean_batch']:.2f}",
            f"{r['baseline_img_s']:.2f}",
            f"{r['batcher_img_s']:.2f}",
            f"{r['ratio']:.2f}x",
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
