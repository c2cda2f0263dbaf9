"""Where a model is called from, and with how many intra-op threads, changes its CPU speed.

    python -m scripts.intraop_threads [--models hrnet,unet] [--calls 20] [--json out.json]

GNU OpenMP (PyTorch's intra-op pool on Linux) counts every thread it manages, the process's main
thread included; once that is more than the CPUs the process may use, an idle pool thread spins
only briefly before sleeping, and every parallel operator then pays a wake-up. A team of
``cores`` intra-op threads started from any thread but the main one is already over that count,
and an engine runs its batches from its device threads. For each model this times eager fp32 at
batch 1 (median of ``--calls`` calls after 3 untimed ones) in a fresh process per case: from the
main thread, from a worker thread, and from a worker thread with one intra-op thread.
Results in docs/benchmarks.md ("ONNX Runtime vs eager PyTorch (CPU)").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ml_service.serving.pool import build_module
from ml_service.serving.threads import available_cores
from ml_service.settings import load_settings
from ml_service.tools.cli_args import positive_int
from models.registry import get_spec

CASES = {  # name: (called from a worker thread, intra-op threads; 0 = the cores given)
    "main thread": (False, 0),
    "worker thread": (True, 0),
    "worker thread, 1 intra-op thread": (True, 1),
}


def time_one(model: str, from_worker: bool, threads: int, calls: int) -> float:
    """Median ms of ``calls`` batch-1 calls of ``model`` (small, eager fp32) in this process."""
    torch.set_num_threads(threads or available_cores())
    spec = get_spec(model, "small")
    module, _ = build_module(spec, load_settings())
    x = torch.rand(1, spec.in_channels, spec.input_size, spec.input_size)

    def median_ms() -> float:
        times = []
        with torch.inference_mode():
            for i in range(calls + 3):
                started = time.perf_counter()
                module(x)
                if i >= 3:
                    times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    if not from_worker:
        return median_ms()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(median_ms).result()


def measure(models: list[str], calls: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for model in models:
        row: dict[str, object] = {"model": model}
        for case, (from_worker, threads) in CASES.items():
            out = subprocess.run(
                [sys.executable, "-m", "scripts.intraop_threads", "--one", model]
                + ["--from-worker"] * from_worker
                + ["--threads", str(threads), "--calls", str(calls)],
                check=True,
                capture_output=True,
                text=True,
            )
            row[case] = round(float(out.stdout.strip().splitlines()[-1]), 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Batch-1 CPU latency by calling thread")
    parser.add_argument("--models", default="hrnet,unet,cbam_resunet")
    parser.add_argument("--calls", type=positive_int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--from-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one case, in this fresh process
        print(time_one(args.one, args.from_worker, args.threads, args.calls))
        return
    rows = measure(args.models.split(","), args.calls)
    title = f"eager fp32, batch 1, ms (median of {args.calls}), {available_cores()} cores"
    table = Table(title=title)
    for col in ("model", *CASES):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("model", *CASES)))
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps({"cores": available_cores(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
