"""Drive N users at once: each creates (or is given) an API key, listens on Socket.IO, uploads
its images as one job, and records when each image was accepted and when its events came."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
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


@dataclass(frozen=True)
class Workload:
    url: str
    users: int
    images: list[Path]  # each user uploads all of these
    models: list[str]
    timeout_s: float = 600.0
    admin_key: str | None = None
    api_keys: tuple[str, ...] = ()


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
    expected = len(work.images)
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
        if sum(r.done_at is not None for r in records.values()) >= expected:
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
    try:
        await sio.connect(work.url, auth={"token": key}, transports=["websocket"])
    except socketio.exceptions.ConnectionError as exc:  # this user fails; the others go on
        log.warning("user %d: Socket.IO refused: %s", user, exc)
        run.errors["socketio_refused"] = run.errors.get("socketio_refused", 0) + 1
        progress.advance(task, expected)
        return
    http = AsyncTransport(work.url, key)
    try:
        model = work.models[user % len(work.models)]
        files = [FilePart("files", p, p.name, content_type(p)) for p in work.images]
        try:
            response = await http.request(
                "POST", "/api/v1/jobs", data={"model": model}, files=files
            )
        except CellsegError as exc:
            code = exc.code if isinstance(exc, ApiError) else type(exc).__name__
            run.errors[code] = run.errors.get(code, 0) + 1
            progress.advance(task, expected)
            return
        accepted = time.monotonic()
        job = response.json()
        for img in job["images"]:
            rec = ImageRecord(user, job["id"], img["id"], accepted)
            records[img["id"]] = rec
            run.images.append(rec)
        job_ids.add(job["id"])
        for event, data, now in early:
            if data.get("job_id") in job_ids:
                apply(event, data, max(now, accepted))
        try:
            await asyncio.wait_for(finished.wait(), work.timeout_s)
        except TimeoutError:
            run.errors["timeout"] = run.errors.get("timeout", 0) + 1
        # the REST state is the truth: an image done there but without its event was lost
        state = (await http.request("GET", f"/api/v1/jobs/{job['id']}")).json()
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
    run = RunResult(users=work.users)
    total = work.users * len(work.images)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"{work.users} users", total=total)
        run.started_at = time.monotonic()
        await asyncio.gather(
            *(run_user(work, u, keys[u], run, progress, task) for u in range(work.users))
        )
        run.finished_at = max([r.done_at for r in run.images if r.done_at] or [time.monotonic()])
    return run
