"""Live workers, as announced by their heartbeat keys in Redis.

Each worker process keeps ``cellseg:worker:<worker name>`` set (TTL ~15 s) to JSON::

    {"name": str, "queue": str, "device": str, "updated_at": float,
     "models": [{"name", "variant", "input_size": [h, w], "backend", "batching": {...}}, ...]}

A key that expired is a dead worker. Malformed values are skipped (and logged at debug level).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

WORKER_KEY_PREFIX = "cellseg:worker:"
HEARTBEAT_TTL_S = 15


def worker_key(name: str) -> str:
    """The Redis key of a worker's heartbeat."""
    return WORKER_KEY_PREFIX + name


@dataclass(frozen=True)
class WorkerHeartbeat:
    name: str
    queue: str
    device: str
    updated_at: float
    models: list[dict[str, Any]] = field(default_factory=list)


def parse_heartbeat(raw: bytes | str) -> WorkerHeartbeat | None:
    """A heartbeat value, or None when it is not the documented JSON shape."""
    try:
        data = json.loads(raw)
        models = [m for m in data.get("models") or [] if isinstance(m, dict) and m.get("name")]
        return WorkerHeartbeat(
            name=str(data["name"]),
            queue=str(data.get("queue", "")),
            device=str(data.get("device", "")),
            updated_at=float(data.get("updated_at", 0.0)),
            models=models,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.debug("skipping malformed worker heartbeat %r: %r", raw, exc)
        return None


async def live_workers(client: aioredis.Redis, *, batch: int = 200) -> list[WorkerHeartbeat]:
    """Every worker whose heartbeat key exists now, sorted by name.

    Raises:
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError: Redis is unreachable.
    """
    keys = [k async for k in client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=batch)]
    workers: list[WorkerHeartbeat] = []
    for start in range(0, len(keys), batch):
        for raw in await client.mget(keys[start : start + batch]):
            if raw is None:  # expired between SCAN and MGET
                continue
            beat = parse_heartbeat(raw)
            if beat is not None:
                workers.append(beat)
    return sorted(workers, key=lambda w: w.name)
