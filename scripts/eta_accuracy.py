"""How right the ETA of ``job.progress`` is, measured through a running service.

Submits a job of N synthetic cell images (after the service has been idle for ``--idle`` s, the
case a fixed one-minute window got wrong), listens to its ``job.progress`` events over
Socket.IO, and compares every ETA shown from the second finished image on with the time the job
really took from then until ``job.done``. Prints one line per event and a summary: the ratio
ETA / real remaining time (within a factor 2 means 0.5..2), and what the former rule (images
the service finished in the last 60 s, over 60 s) would have said after the idle spell.

    python -m scripts.eta_accuracy --url http://127.0.0.1:8000 --key KEY --images 30
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import cv2
import httpx
import numpy as np
import socketio

from ml_service.training.synthetic import generate_sample


@dataclass(frozen=True)
class Shown:
    at: float
    finished: int
    remaining: int
    eta_s: float | None


def images(n: int, seed: int, side: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ok, buf = cv2.imencode(".png", generate_sample(rng, side, "cells").image)
        if not ok:
            raise RuntimeError("cannot encode a PNG")
        out.append(buf.tobytes())
    return out


async def run_job(url: str, key: str, files: list[bytes], model: str) -> tuple[list[Shown], float]:
    """The job's ``job.progress`` events (time since submission) and when it was done."""
    shown: list[Shown] = []
    done = asyncio.Event()
    job_id: list[str] = []
    t0 = time.monotonic()
    ended: list[float] = []

    sio = socketio.AsyncClient(reconnection=False)

    async def on_progress(data: dict[str, Any]) -> None:
        if job_id and data.get("job_id") == job_id[0]:
            finished = int(data["done"]) + int(data["failed"])
            remaining = int(data["queued"]) + int(data["processing"])
            shown.append(Shown(time.monotonic() - t0, finished, remaining, data.get("eta_s")))

    async def on_done(data: dict[str, Any]) -> None:
        if job_id and data.get("job_id") == job_id[0]:
            ended.append(time.monotonic() - t0)
            done.set()

    sio.on("job.progress", on_progress)
    sio.on("job.done", on_done)
    await sio.connect(url, auth={"token": key}, wait_timeout=10)
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            t0 = time.monotonic()
            r = await http.post(
                f"{url}/api/v1/jobs",
                files=[("files", (f"img{i:02d}.png", b, "image/png")) for i, b in enumerate(files)],
                data={"model": model},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
            job_id.append(r.json()["id"])
        await asyncio.wait_for(done.wait(), timeout=1800)
    finally:
        await sio.disconnect()
    return shown, ended[0]


def report(shown: list[Shown], end: float) -> tuple[float, float, int, int]:
    """Print each ETA against the real remaining time; (min ratio, max ratio, within, total)."""
    ratios = []
    head = f"{'t (s)':>7} {'finished':>8} {'left':>5} {'ETA (s)':>8} {'real (s)':>8} {'ratio':>6}"
    print(f"{head} {'60 s window (s)':>15}")
    for s in shown:
        real = end - s.at
        if s.finished < 2 or not s.remaining or s.eta_s is None or real <= 0:
            continue
        ratio = s.eta_s / real
        ratios.append(ratio)
        window = s.remaining * 60.0 / s.finished  # the job's images are all the service did
        print(
            f"{s.at:7.2f} {s.finished:8d} {s.remaining:5d} {s.eta_s:8.1f} {real:8.2f} {ratio:6.2f}"
            f" {window:15.0f}"
        )
    within = sum(1 for r in ratios if 0.5 <= r <= 2.0)
    if not ratios:
        return float("nan"), float("nan"), 0, 0
    return min(ratios), max(ratios), within, len(ratios)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--side", type=int, default=256, help="image side in pixels")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--idle", type=float, default=65.0, help="seconds idle before the job")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = images(args.images, args.seed, args.side)
    await asyncio.sleep(args.idle)
    shown, end = await run_job(args.url, args.key, files, args.model)
    low, high, within, total = report(shown, end)
    print(
        f"{args.images} images in {end:.1f} s after {args.idle:g} s idle: ETA / real remaining "
        f"from the second finished image: {low:.2f}..{high:.2f}; {within} of {total} within "
        "a factor 2"
    )
    return 0 if total and within == total else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
