"""Progress events: names, rooms and payloads (the contract between workers and gateways).

Workers emit through python-socketio's write-only ``RedisManager``; gateways run an
``AsyncServer`` with ``AsyncRedisManager`` on the same Redis channel, so any replica delivers to
any client. Events go to the owner's rooms only (``user:<id>`` and ``job:<id>``; a client in
both receives one copy). REST state is the truth; events are a live view of it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import socketio

log = logging.getLogger(__name__)

CHANNEL = "cellseg-socketio"


def channel_for(redis_url: str) -> str:
    """The pub/sub channel of one deployment: ``CHANNEL`` and the Redis database number.

    Redis pub/sub ignores the database a client selected, so two deployments on one Redis
    server (a ``make run`` service and the tests, each in a database of its own) would hear
    each other's events, and a publish would count the other's gateways as receivers.
    """
    url = urlsplit(redis_url)
    db = url.path.strip("/") if url.scheme != "unix" else ""
    db = db or parse_qs(url.query).get("db", ["0"])[0]
    return f"{CHANNEL}:{int(db) if db.isdigit() else 0}"

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


class _CountingRedisManager(socketio.RedisManager):  # type: ignore[misc]
    """python-socketio's write-only manager logs and swallows a failed publish; this one
    remembers, per thread, how many subscribers the last publish reached (None: it failed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last = threading.local()

    def _publish(self, data: Any) -> Any:
        self.last.receivers = None
        receivers = super()._publish(data)
        self.last.receivers = receivers
        return receivers


class EventPublisher:
    """Write-only publisher for processes that run no Socket.IO server (workers).

    Best effort: events are a live view of the database, so a publish that fails (Redis
    restarting) is logged and dropped, never failing the work that was already stored.
    :meth:`emit` says whether a gateway received it, for the events that must not be lost
    (``job.done``, marked sent only then).
    """

    def __init__(self, redis_url: str) -> None:
        self._manager = _CountingRedisManager(
            redis_url, channel=channel_for(redis_url), write_only=True
        )

    def emit(self, event: str, data: dict[str, Any], to: list[str]) -> bool:
        """Publish; True when at least one gateway was subscribed and got it."""
        try:
            self._manager.emit(event, data, namespace="/", room=to)
        except Exception as exc:  # redis errors of any kind: the REST state stays the truth
            log.warning("event %s not published: %s", event, exc)
            return False
        receivers = getattr(self._manager.last, "receivers", None)
        if not receivers:
            log.warning("event %s reached no gateway (Redis restarting?)", event)
        return bool(receivers)


_published: contextvars.ContextVar[int | None] = contextvars.ContextVar("published", default=None)


class CheckedAsyncRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The gateways' manager: as python-socketio's, but :func:`last_publish_ok` tells the
    emitting task whether its last publish reached Redis (python-socketio logs and swallows a
    failure)."""

    async def _publish(self, data: Any) -> Any:
        _published.set(None)
        receivers = await super()._publish(data)
        _published.set(receivers)
        return receivers


def last_publish_ok() -> bool:
    """Whether the current task's last publish through :class:`CheckedAsyncRedisManager`
    reached Redis."""
    return _published.get() is not None
