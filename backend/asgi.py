"""The gateway as served: FastAPI + Socket.IO (``/socket.io``) + the dispatcher + ``/metrics``.

``python -m backend serve`` runs ``create_asgi`` (a uvicorn factory). Each replica runs a
dispatcher task; only the one holding the PostgreSQL advisory lock dispatches. With
``RETENTION_DAYS`` > 0 each also runs the retention loop (:mod:`backend.retention`; one purge
at a time in the service, under its own advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import socketio
from fastapi import FastAPI

from backend.app import create_app
from backend.dispatcher import Dispatcher, make_sender
from backend.realtime import ConnectionCount, create_sio
from backend.retention import RetentionLoop
from backend.routes import metrics
from contracts import events
from contracts.db import recovery, work
from contracts.jobs_state import counts_payload, job_status
from contracts.settings import Settings, get_settings

log = logging.getLogger(__name__)


def attach_service(app: FastAPI, settings: Settings) -> socketio.AsyncServer:
    """Add Socket.IO, the dispatcher and metrics to a ``create_app`` app."""
    connections = ConnectionCount()
    sio = create_sio(settings, lambda: app.state.pool, connections)
    app.state.sio = sio
    app.state.sio_connections = connections
    app.include_router(metrics.router)
    inner = app.router.lifespan_context

    async def announce(job_id: str, owner: int) -> bool:
        """Emit ``job.done`` of a finished job; True when the publish reached Redis (this
        gateway's own clients get it either way)."""
        counts, total = await work.job_counts(app.state.pool, job_id)
        payload = events.job_done(job_id, job_status(counts, total), counts_payload(counts, total))
        await sio.emit(events.JOB_DONE, payload, room=events.rooms(owner, job_id))
        return events.last_publish_ok()

    async def job_finished(job_id: UUID) -> None:
        pool = app.state.pool
        owner = await pool.fetchval("SELECT user_id FROM jobs WHERE id = $1", job_id)
        if await announce(str(job_id), owner):
            await recovery.mark_done_sent(pool, str(job_id))

    async def images_cancelled(job_id: UUID, image_ids: list[UUID]) -> None:
        owner = await app.state.pool.fetchval("SELECT user_id FROM jobs WHERE id = $1", job_id)
        for image_id in image_ids:
            payload = events.image_update(str(job_id), str(image_id), "cancelled")
            await sio.emit(events.IMAGE_UPDATE, payload, room=events.rooms(owner, str(job_id)))

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a):
            dispatcher = Dispatcher(
                settings, a.state.pool, make_sender(settings), a.state.redis, announce
            )
            task = asyncio.create_task(dispatcher.run(), name="dispatcher")
            a.state.dispatcher = dispatcher
            a.state.on_job_created = lambda job_id: dispatcher.wake()
            a.state.on_job_finished = job_finished
            a.state.on_images_cancelled = images_cancelled
            retention = RetentionLoop(settings, a.state.pool, a.state.store)
            a.state.retention = retention
            retention_task = (
                asyncio.create_task(retention.run(), name="retention")
                if settings.retention_days > 0
                else None
            )
            try:
                yield
            finally:
                dispatcher.stop()
                retention.stop()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, 5)
                if retention_task is not None:
                    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                        await asyncio.wait_for(retention_task, 5)

    app.router.lifespan_context = lifespan
    return sio


def create_asgi() -> socketio.ASGIApp:
    settings = get_settings()
    app = create_app(settings)
    sio = attach_service(app, settings)
    return socketio.ASGIApp(sio, other_asgi_app=app, socketio_path="socket.io")
