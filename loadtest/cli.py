"""``python -m loadtest --url URL --users 8 --images-per-user N --models hrnet,unet ...``

Reports images/s overall and per user, per-image latency p50/p95/p99 (upload accepted →
final ``image.update``), time to first progress event, events lost, errors by code and
fairness (slowest user's throughput / fastest's), as a table and as JSON. ``--baseline`` first
runs the same workload with 1 user and reports p95 at N users over p95 at 1 user.

``--mode burst`` (default) uploads each user's images as one job; ``--mode closed`` uploads them
one at a time, each after the previous result and a think time of mean ``--think-s`` seconds (see
:mod:`loadtest.runner`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest.images import folder_images, synthetic_images
from loadtest.report import summarize
from loadtest.runner import MODES, Workload, run_workload


def table(summary: dict[str, Any], title: str) -> Table:
    t = Table(title=title)
    t.add_column("measure")
    t.add_column("value", justify="right")
    lat = summary["latency_s"]
    rows = [
        ("users", summary["users"]),
        ("images done / sent", f"{summary['done']} / {summary['images']}"),
        ("images/s overall", summary["images_per_s"]),
        ("latency p50 / p95 / p99 s", f"{lat['p50']} / {lat['p95']} / {lat['p99']}"),
        ("time to first event p50 s", summary["time_to_first_event_s"]["p50"]),
        ("events lost", summary["events_lost"]),
        ("errors", json.dumps(summary["errors"])),
        ("fairness (slowest/fastest user)", summary["fairness"]),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    return t


async def run(args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    def workload(users: int) -> Workload:
        return Workload(
            url=args.url,
            users=users,
            images=images,
            models=models,
            timeout_s=args.timeout,
            admin_key=args.admin_key,
            api_keys=tuple(args.api_key or ()),
            mode=args.mode,
            think_s=args.think_s,
        )

    report: dict[str, Any] = {
        "command": "python -m loadtest " + " ".join(sys.argv[1:]),
        "mode": args.mode,
        "think_s": args.think_s,
    }
    if args.baseline:
        report["baseline"] = summarize(await run_workload(workload(1)))
    report["run"] = summarize(await run_workload(workload(args.users)))
    if args.baseline:
        p95_1 = report["baseline"]["latency_s"]["p95"]
        p95_n = report["run"]["latency_s"]["p95"]
        report["p95_ratio"] = round(p95_n / p95_1, 3) if p95_1 and p95_n else None
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--images-per-user", type=int, default=10)
    parser.add_argument("--models", default="hrnet,unet,cbam_resunet")
    parser.add_argument("--images", default="synthetic", help="a folder, or 'synthetic'")
    parser.add_argument("--size", type=int, default=256, help="synthetic image side")
    parser.add_argument("--admin-key", help="creates one user per simulated user")
    parser.add_argument("--api-key", action="append", help="existing keys (one per user)")
    parser.add_argument("--baseline", action="store_true", help="also run with 1 user first")
    parser.add_argument("--timeout", type=float, default=600.0, help="per user, seconds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--mode", choices=MODES, default="burst", help="one job per user, or one image at a time"
    )
    parser.add_argument(
        "--think-s",
        type=float,
        default=0.0,
        help="closed mode: mean pause after each result (exponential)",
    )
    args = parser.parse_args(argv)
    if args.think_s < 0:
        parser.error("--think-s must be >= 0")
    if args.think_s and args.mode != "closed":
        parser.error("--think-s applies to --mode closed only")
    with tempfile.TemporaryDirectory() as tmp:
        if args.images == "synthetic":
            images = synthetic_images(args.images_per_user, args.size, Path(tmp))
        else:
            images = folder_images(Path(args.images), args.images_per_user)
        report = asyncio.run(run(args, images))
    console = Console()
    if "baseline" in report:
        console.print(table(report["baseline"], f"baseline: 1 user, {args.mode}"))
    console.print(table(report["run"], f"{args.users} users, {args.mode}"))
    if report.get("p95_ratio") is not None:
        console.print(f"p95 latency at {args.users} users / at 1 user: {report['p95_ratio']}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
