"""Pure statistics of a load-test run: throughput, latency percentiles, fairness."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageRecord:
    user: int
    job_id: str
    image_id: str
    accepted_at: float  # the upload's 202 arrived
    first_event_at: float | None = None
    done_at: float | None = None  # final image.update (done or failed) arrived
    status: str | None = None  # final status by event, else by REST


@dataclass
class RunResult:
    users: int
    mode: str = "burst"  # loadtest.runner.MODES
    images: list[ImageRecord] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _percentiles(values: list[float], qs: tuple[int, ...]) -> dict[str, float | None]:
    """``{"p50": ..., ...}`` rounded to ms; None each when there are no values."""
    return {f"p{q}": None if (v := percentile(values, q)) is None else round(v, 3) for q in qs}


def _latency_fairness(done: list[ImageRecord], users: int) -> float:
    """Closed mode: throughput follows each user's random think times, while what a user feels
    is latency; fairness is the fastest user's median latency over the slowest user's (0 when
    a user got nothing done)."""
    medians = []
    for u in range(users):
        mine = [r.done_at - r.accepted_at for r in done if r.user == u and r.done_at is not None]
        if not mine:
            return 0.0
        medians.append(float(np.median(mine)))
    return round(min(medians) / max(medians), 3) if max(medians) > 0 else 1.0


def summarize(run: RunResult) -> dict[str, Any]:
    done = [r for r in run.images if r.status == "done"]
    latencies = [r.done_at - r.accepted_at for r in done if r.done_at is not None]
    firsts = [r.first_event_at - r.accepted_at for r in run.images if r.first_event_at]
    wall = max(run.finished_at - run.started_at, 1e-9)
    per_user: dict[int, float] = {}
    for u in range(run.users):
        mine = [r for r in done if r.user == u and r.done_at is not None]
        if mine:
            span = max(r.done_at or 0.0 for r in mine) - min(r.accepted_at for r in mine)
            per_user[u] = len(mine) / max(span, 1e-9)
        else:
            per_user[u] = 0.0
    rates = list(per_user.values())
    fairness = round(min(rates) / max(rates), 3) if rates and max(rates) > 0 else None
    if run.mode == "closed":
        fairness = _latency_fairness(done, run.users)
    lost = [r for r in run.images if r.status is not None and r.done_at is None]
    errors = dict(run.errors)
    for r in run.images:
        if r.status not in (None, "done"):
            errors[f"image_{r.status}"] = errors.get(f"image_{r.status}", 0) + 1
    return {
        "users": run.users,
        "images": len(run.images),
        "done": len(done),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(done) / wall, 3),
        "images_per_s_per_user": {str(u): round(v, 3) for u, v in per_user.items()},
        "latency_s": _percentiles(latencies, (50, 95, 99)),
        "time_to_first_event_s": _percentiles(firsts, (50, 95)),
        "events_lost": len(lost),
        "errors": errors,
        "fairness": fairness,
    }
