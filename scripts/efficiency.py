"""Service efficiency: the engine alone vs the whole service, same model, images and users.

    python -m scripts.efficiency --url http://127.0.0.1:8000 --admin-key KEY \\
        [--model hrnet] [--users 8] [--images-per-user 20] [--json out.json] [--record]

In one run: (1) the engine in this process, 8 concurrent callers: raw batched inference on
preprocessed inputs (``ml_service.tools.bench``'s batcher figure) and the whole engine path (PNG
bytes →
result and the worker's result formats: ``ml_service.tools.pipeline_rate``, as the profiler records
it); (2) the load tester's end-to-end
throughput through the running service (REST upload → worker → result → Socket.IO event) at
``--users`` users. Prints end-to-end / engine for both engine figures, and where the CPU went
(:mod:`loadtest.cpu_accounting`): the engine alone's CPU ms per image, each role's during the load
test (worker, gateway, PostgreSQL, Redis, the load tester), the machine's idle share, and the
ratio this machine would allow if no core idled. ``--record`` stores the
whole path and end to end ÷ whole path (both measured here, on the load tester's images) in the
model's profile as ``pipeline_images_per_s`` and ``service_efficiency``, which the planner uses.
Run it against an idle service on the same machine (``make run``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from loadtest.cpu_accounting import account, snapshot
from loadtest.images import synthetic_images
from loadtest.report import summarize
from loadtest.runner import Workload, run_workload
from ml_service.serving.engine import Engine
from ml_service.settings import load_settings
from ml_service.tools.bench import bench_model
from ml_service.tools.cli_args import positive_int
from ml_service.tools.pipeline_rate import measure_pipeline_on, record_service_efficiency


def cpu_report(alone: dict[str, Any], shared: dict[str, Any], full: float) -> dict[str, Any]:
    """CPU ms per image: the engine alone (this process, which measured it) and every role
    during the load test, with the ratio this machine allows if no core ever idled: all the
    cores' time spent at the load test's CPU cost per image, over the engine alone's rate."""
    total = shared["cpu_ms_per_image_total"]
    cores = psutil.cpu_count() or 1
    return {
        "engine_alone_cpu_ms_per_image": alone["cpu_ms_per_image"]["load_tester"],
        "engine_alone_machine_idle_share": alone["machine_idle_share"],
        "service": shared,
        "ratio_ceiling_no_idle": round(cores * 1000 / total / full, 3) if total else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Engine alone vs the whole service")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--users", type=positive_int, default=8)
    parser.add_argument("--images-per-user", type=positive_int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the whole path and end to end ÷ whole path in the model's profile",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_images(args.images_per_user, 256, Path(tmp))
        settings = load_settings().model_copy(update={"models": (args.model,)})
        with Engine.from_settings(settings) as engine:
            raw = bench_model(engine, args.model, args.users, args.users * args.images_per_user)
            encoded = [p.read_bytes() for p in images] * args.users
            before = snapshot()
            full = measure_pipeline_on(engine, args.model, encoded, callers=args.users)
            alone = account(before, snapshot(), len(encoded))
            profile_key = engine.pool.get(args.model).profile_key
        work = Workload(args.url, args.users, images, [args.model], admin_key=args.admin_key)
        before = snapshot()
        e2e = summarize(asyncio.run(run_workload(work)))
        shared = account(before, snapshot(), e2e["done"])
    report = {
        "command": "python -m scripts.efficiency " + " ".join(sys.argv[1:]),
        "device": engine.probe.key,
        "model": args.model,
        "engine_raw_batched_img_s": raw["batcher_img_s"],
        "engine_full_path_img_s": round(full, 2),
        "service_end_to_end_img_s": e2e["images_per_s"],
        "ratio_vs_raw_batched": round(e2e["images_per_s"] / raw["batcher_img_s"], 3),
        "ratio_vs_full_path": round(e2e["images_per_s"] / full, 3),
        "cpu": cpu_report(alone, shared, full),
        "end_to_end": e2e,
    }
    sys.stdout.write(json.dumps({k: v for k, v in report.items() if k != "end_to_end"}, indent=2))
    sys.stdout.write("\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.record:
        ratio = e2e["images_per_s"] / full
        recorded = record_service_efficiency(
            settings.profiles_path, engine.probe.key, profile_key, ratio, pipeline=full
        )
        if not recorded:
            sys.exit(f"no profile {profile_key} for {engine.probe.key}: run the profiler first")


if __name__ == "__main__":
    main()
