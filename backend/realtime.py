"""Socket.IO server of the gateway (path ``/socket.io``).

Clients connect with ``auth={"token": "<api key>"}`` (refused otherwise) and join
``user:<id>``; ``emit("subscribe", {"job_id"})`` joins ``job:<id>`` for one's own job. Events
arrive from workers through Redis (``AsyncRedisManager``), so any replica serves any client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg
import socketio

from backend.auth import hash_api_key
from contracts import events
from contracts.db import repo
from contracts.settings import Settings

log = logging.getLogger(__name__)


class ConnectionCount:
    """Authenticated Socket.IO connections of this process (for ``/metrics``)."""

    def __init__(self) -> None:
        self.value = 0


def create_sio(
    settings: Settings, pool: Callable[[], asyncpg.Pool], count: ConnectionCount | None = None
) -> socketio.AsyncServer:
    manager = events.CheckedAsyncRedisManager(
        settings.redis_url, channel=events.channel_for(settings.redis_url)
    )
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, cors_allowed_origins="*", logger=False
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: auth.token missing")
        try:
            user = await repo.user_by_key_hash(pool(), hash_api_key(token))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise socketio.exceptions.ConnectionRefusedError("service unavailable") from exc
        if user is None:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: invalid API key")
        await sio.save_session(sid, {"user_id": user["id"]})
        await sio.enter_room(sid, events.user_room(user["id"]))
        if count is not None:
            count.value += 1

    @sio.event
    async def disconnect(sid: str, *args: Any) -> None:
        session = await sio.get_session(sid)
        if count is not None and session.get("user_id") is not None:
            count.value -= 1

    @sio.event
    async def subscribe(sid: str, data: Any) -> dict[str, Any]:
        session = await sio.get_session(sid)
        job_id = data.get("job_id") if isinstance(data, dict) else None
        try:
            job = await repo.get_job(pool(), session["user_id"], UUID(str(job_id)))
        except ValueError:
            job = None
        if job is None:
            message = f"job {job_id} not found"
            return {"error": {"code": "not_found", "message": message, "retryable": False}}
        await sio.enter_room(sid, events.job_room(str(job["id"])))
        return {"ok": True, "job_id": str(job["id"])}

    return sio
