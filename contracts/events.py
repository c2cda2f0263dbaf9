"""Progress events: names, rooms and payloads (the contract between workers and gateways).

Workers emit through python-socketio's write-only ``RedisManager``; gateways run an
``AsyncServer`` with ``AsyncRedisManager`` on the same Redis channel, so any replica delivers to
any client. Events go to the owner's rooms only (``user:<id>`` and ``job:<id>``; a client in
both receives one copy). REST state is the truth; events are a live view of it.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

log = logging.getLogger(__name__)

CHANNEL = "cellseg-socketio"

IMAGE_UPDATE = "image.update"
JOB_PROGRESS = "job.progress"
JOB_DONE = "job.done"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def job_room(job_id: str) -> str:
    return f"job:{job_id}"


def rooms(user_id: int, job_id: str) -> list[str]:
    return [user_room(user_id), job_room(job_id)]


def image_update(
    job_id: str,
    image_id: str,
    status: str,
    *,
    error: dict[str, str] | None = None,
    objects: int | None = None,
    inference_ms: float | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"job_id": job_id, "image_id": image_id, "status": status}
    if error is not None:
        payload["error"] = error
    if objects is not None:
        payload["objects"] = objects
    if inference_ms is not None:
        payload["inference_ms"] = round(inference_ms, 2)
    return payload


def job_progress(
    job_id: str, counts: dict[str, int], queue_position: int | None, eta_s: float | None
) -> dict[str, Any]:
    return {"job_id": job_id, **counts, "queue_position": queue_position, "eta_s": eta_s}


def job_done(job_id: str, status: str, counts: dict[str, int]) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "counts": counts}


class EventPublisher:
    """Write-only publisher for processes that run no Socket.IO server (workers).

    Best effort: events are a live view of the database, so a publish that fails (Redis
    restarting) is logged and dropped, never failing the work that was already stored.
    """

    def __init__(self, redis_url: str) -> None:
        self._manager = socketio.RedisManager(redis_url, channel=CHANNEL, write_only=True)

    def emit(self, event: str, data: dict[str, Any], to: list[str]) -> None:
        try:
            self._manager.emit(event, data, namespace="/", room=to)
        except Exception as exc:  # redis errors of any kind: the REST state stays the truth
            log.warning("event %s not published: %s", event, exc)
