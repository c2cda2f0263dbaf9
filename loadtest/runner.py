"""Drive N users at once: each creates (or is given) an API key, listens on Socket.IO, uploads
its images, and records when each image was accepted and when its events came.

Two ways a user sends its images (``Workload.mode``):

- ``burst``: all of them as one job at once. Each image's latency then includes waiting
  behind the user's own other images, so it measures throughput and fairness under backlog.
- ``closed``: one image per job, the next uploaded only when the previous one's final event
  arrived and a think time passed (a person looking at the result). Latency is then the
  service time of one image under the others' load: the "8 users, latency < 2x one
  user" criterion. Think times are drawn from an exponential distribution with mean
  ``think_s`` and each user starts after one such draw (seeded per user, so runs repeat), so
  users do not march in lockstep as identical fixed pauses would make them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import socketio
from rich.progress import Progress

from cellseg_client.errors import ApiError, CellsegError
from cellseg_client.files import content_type
from cellseg_client.transport import AsyncTransport, FilePart
from loadtest.report import ImageRecord, RunResult

log = logging.getLogger(__name__)


class NotLoopback(ValueError):
    """Load tests send traffic to this machine only."""


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise NotLoopback(f"{url}: load tests target loopback addresses only (127.0.0.0/8, ::1)")


MODES = ("burst", "closed")


@dataclass(frozen=True)
class Workload:
    url: str
    users: int
    images: list[Path]  # each user uploads all of these
    models: list[str]
    timeout_s: float = 600.0
    admin_key: str | None = None
    api_keys: tuple[str, ...] = ()
    mode: str = "burst"  # see the module docstring
    think_s: float = 0.0  # closed mode: pause after each result

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.think_s < 0:
            raise ValueError(f"think time must be >= 0, not {self.think_s}")
        if self.users < 1 or not self.images or not self.models:
            raise ValueError("a workload needs at least one user, one image and one model")

    def uploads(self) -> list[list[Path]]:
        """The jobs one user sends, in order."""
        return [self.images] if self.mode == "burst" else [[p] for p in self.images]


async def make_keys(work: Workload) -> list[str]:
    if len(work.api_keys) >= work.users:
        return list(work.api_keys[: work.users])
    if not work.admin_key:
        raise ValueError("give --admin-key (to create users) or one --api-key per user")
    admin = AsyncTransport(work.url, work.admin_key)
    try:
        keys = list(work.api_keys)
        for i in range(len(keys), work.users):
            r = await admin.request("POST", "/api/v1/users", json={"name": f"loadtest-{i}"})
            keys.append(r.json()["api_key"])
        return keys
    finally:
        await admin.aclose()


async def run_user(
    work: Workload, user: int, key: str, run: RunResult, progress: Progress, task: Any
) -> None:
    records: dict[str, ImageRecord] = {}
    finished = asyncio.Event()
    expected = 0  # images of the jobs sent so far
    sio = socketio.AsyncClient(reconnection=True)
    job_ids: set[str] = set()
    early: list[tuple[str, dict[str, Any], float]] = []

    def apply(event: str, data: dict[str, Any], now: float) -> None:
        rec = records.get(str(data.get("image_id")))
        if event == "image.update" and rec is not None:
            rec.first_event_at = rec.first_event_at or now
            if data["status"] in ("done", "failed", "cancelled") and rec.done_at is None:
                rec.done_at, rec.status = now, data["status"]
                progress.advance(task)
        elif event == "job.progress":
            for r in records.values():
                if r.job_id == data.get("job_id"):
                    r.first_event_at = r.first_event_at or now
        if expected and sum(r.done_at is not None for r in records.values()) >= expected:
            finished.set()

    def on(event: str) -> Any:
        async def handler(data: dict[str, Any]) -> None:
            now = time.monotonic()
            if data.get("job_id") not in job_ids:
                early.append((event, data, now))  # arrived before the 202 was read
                return
            apply(event, data, now)

        return handler

    for name in ("image.update", "job.progress", "job.done"):
        sio.on(name, on(name))
    total = len(work.images)
    try:
        await sio.connect(work.url, auth={"token": key}, transports=["websocket"])
    except socketio.exceptions.ConnectionError as exc:  # this user fails; the others go on
        log.warning("user %d: Socket.IO refused: %s", user, exc)
        run.errors["socketio_refused"] = run.errors.get("socketio_refused", 0) + 1
        progress.advance(task, total)
        return
    http = AsyncTransport(work.url, key)
    model = work.models[user % len(work.models)]
    deadline = time.monotonic() + work.timeout_s
    sent = 0
    pauses = random.Random(user)
    try:
        for paths in work.uploads():
            if work.think_s:
                await asyncio.sleep(pauses.expovariate(1 / work.think_s))
            files = [FilePart("files", p, p.name, content_type(p)) for p in paths]
            try:
                response = await http.request(
                    "POST", "/api/v1/jobs", data={"model": model}, files=files
                )
            except CellsegError as exc:
                code = exc.code if isinstance(exc, ApiError) else type(exc).__name__
                run.errors[code] = run.errors.get(code, 0) + 1
                progress.advance(task, total - sent)
                return
            sent += len(paths)
            accepted = time.monotonic()
            job = response.json()
            for img in job["images"]:
                rec = ImageRecord(user, job["id"], img["id"], accepted)
                records[img["id"]] = rec
                run.images.append(rec)
            job_ids.add(job["id"])
            finished.clear()
            expected = len(records)
            pending, early[:] = list(early), []
            for event, data, now in pending:
                if data.get("job_id") in job_ids:
                    apply(event, data, max(now, accepted))
                else:
                    early.append((event, data, now))
            apply("", {}, accepted)  # every image of this job may be done already
            try:
                await asyncio.wait_for(finished.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                run.errors["timeout"] = run.errors.get("timeout", 0) + 1
                progress.advance(task, total - sent)
                break
        # the REST state is the truth: an image done there but without its event was lost
        for job_id in job_ids:
            state = (await http.request("GET", f"/api/v1/jobs/{job_id}")).json()
            for img in state["images"]:
                rec = records[img["id"]]
                if rec.status is None and img["status"] in ("done", "failed", "cancelled"):
                    rec.status = img["status"]
    finally:
        await http.aclose()
        await sio.disconnect()


async def run_workload(work: Workload) -> RunResult:
    check_loopback(work.url)
    keys = await make_keys(work)
    run = RunResult(users=work.users, mode=work.mode)
    total = work.users * len(work.images)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"{work.users} users", total=total)
        run.started_at = time.monotonic()
        await asyncio.gather(
            *(run_user(work, u, keys[u], run, progress, task) for u in range(work.users))
        )
        run.finished_at = max([r.done_at for r in run.images if r.done_at] or [time.monotonic()])
    return run
