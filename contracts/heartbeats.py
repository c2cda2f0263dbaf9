"""Live workers, as announced by their heartbeat keys in Redis.

Each worker process keeps ``cellseg:worker:<worker name>`` set (TTL ~15 s) to JSON::

    {"name": str, "queue": str, "device": str, "updated_at": float, "draining": bool,
     "in_flight": int, "capacity": int, "free_memory_bytes": int,
     "batch_ceilings": {model: int}, "batch_slots": int, "cpu_stage_depth": int,
     "memory": {...}, "gpus": [...], "startup_s": float,
     "models": [{"name", "variant", "input_size": [h, w], "backend", "batching": {...}}, ...]}

A key that expired is a dead worker; a draining one (SIGTERM) finishes what it holds and takes
nothing new. Malformed values are skipped (and logged at debug level).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

WORKER_KEY_PREFIX = "cellseg:worker:"
HEARTBEAT_TTL_S = 15

# counters the workers keep in Redis and the gateway's /metrics reads (hashes)
METRIC_BATCHES = "cellseg:metrics:batch_sizes"  # batch size → batches
METRIC_IMAGES = "cellseg:metrics:images"  # done | failed → images


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
    draining: bool = False
    in_flight: int = 0
    capacity: int = 0
    free_memory_bytes: int | None = None
    batch_ceilings: dict[str, int] = field(default_factory=dict)
    batch_slots: int = 1  # batches that may run on the device at once
    cpu_stage_depth: int = 1  # images in decode/preprocess/postprocess at once
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """Takes new work: models loaded and not draining."""
        return bool(self.models) and not self.draining

    def to_json(self) -> dict[str, Any]:
        """The admin view (``GET /api/v1/workers``)."""
        return {
            "name": self.name,
            "queue": self.queue,
            "device": self.device,
            "updated_at": self.updated_at,
            "draining": self.draining,
            "in_flight": self.in_flight,
            "capacity": self.capacity,
            "free_memory_bytes": self.free_memory_bytes,
            "batch_ceilings": self.batch_ceilings,
            "batch_slots": self.batch_slots,
            "cpu_stage_depth": self.cpu_stage_depth,
            "models": [
                {k: m.get(k) for k in ("name", "variant", "backend", "input_size")}
                for m in self.models
            ],
            **self.extra,
        }


def parse_heartbeat(raw: bytes | str) -> WorkerHeartbeat | None:
    """A heartbeat value, or None when it is not the documented JSON shape."""
    try:
        data = json.loads(raw)
        models = [m for m in data.get("models") or [] if isinstance(m, dict) and m.get("name")]
        free = data.get("free_memory_bytes")
        return WorkerHeartbeat(
            name=str(data["name"]),
            queue=str(data.get("queue", "")),
            device=str(data.get("device", "")),
            updated_at=float(data.get("updated_at", 0.0)),
            models=models,
            draining=bool(data.get("draining", False)),
            in_flight=int(data.get("in_flight") or 0),
            capacity=int(data.get("capacity") or 0),
            free_memory_bytes=None if free is None else int(free),
            batch_ceilings={
                str(k): int(v) for k, v in (data.get("batch_ceilings") or {}).items() if v
            },
            batch_slots=max(1, int(data.get("batch_slots") or 1)),
            cpu_stage_depth=max(1, int(data.get("cpu_stage_depth") or 1)),
            extra={k: data[k] for k in ("memory", "gpus", "startup_s") if k in data},
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.debug("skipping malformed worker heartbeat %r: %r", raw, exc)
        return None


def serving_queues(workers: list[WorkerHeartbeat]) -> dict[str, int]:
    """Queues with at least one worker taking work, and how many workers each has."""
    out: dict[str, int] = {}
    for w in workers:
        if w.serving and w.queue:
            out[w.queue] = out.get(w.queue, 0) + 1
    return out


async def live_workers(
    client: aioredis.Redis, *, queues: Iterable[str] | None = None, batch: int = 200
) -> list[WorkerHeartbeat]:
    """Every worker whose heartbeat key exists now, sorted by name; with ``queues``, only the
    workers of those queues (a gateway counts the workers it dispatches to, not every worker
    that shares its Redis database).

    Raises:
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError: Redis is unreachable.
    """
    wanted = None if queues is None else set(queues)
    keys = [k async for k in client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=batch)]
    workers: list[WorkerHeartbeat] = []
    for start in range(0, len(keys), batch):
        for raw in await client.mget(keys[start : start + batch]):
            if raw is None:  # expired between SCAN and MGET
                continue
            beat = parse_heartbeat(raw)
            if beat is not None and (wanted is None or beat.queue in wanted):
                workers.append(beat)
    return sorted(workers, key=lambda w: w.name)
