"""``GET /metrics``: Prometheus exposition, computed per scrape.

Queue depth and images by status come from PostgreSQL (the truth, shared by every replica);
images processed and batch sizes come from counters the workers keep in Redis.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contracts.heartbeats import METRIC_BATCHES, METRIC_IMAGES

log = logging.getLogger(__name__)
router = APIRouter()


class _Snapshot:
    """A collector over values read just before the scrape."""

    def __init__(
        self,
        by_status: dict[str, int],
        batches: dict[str, int],
        images: dict[str, int],
        per_queue: list[tuple[str, str, int]],
        connections: int | None,
        leader: bool | None = None,
    ) -> None:
        self.by_status, self.batches, self.images = by_status, batches, images
        self.per_queue, self.connections, self.leader = per_queue, connections, leader

    def collect(self):  # type: ignore[no-untyped-def]
        depth = GaugeMetricFamily(
            "cellseg_queue_depth", "Images waiting (queued or dispatched, not yet started)"
        )
        depth.add_metric([], self.by_status.get("queued", 0) + self.by_status.get("dispatched", 0))
        yield depth
        status = GaugeMetricFamily("cellseg_images", "Images by status", labels=["status"])
        for s in ("queued", "dispatched", "processing", "done", "failed", "cancelled"):
            status.add_metric([s], self.by_status.get(s, 0))
        yield status
        processed = CounterMetricFamily(
            "cellseg_images_processed", "Images processed by workers", labels=["outcome"]
        )
        for outcome in ("done", "failed"):
            processed.add_metric([outcome], self.images.get(outcome, 0))
        yield processed
        batches = CounterMetricFamily(
            "cellseg_batches", "Inference batches run, by batch size", labels=["batch_size"]
        )
        for size, n in sorted(self.batches.items(), key=lambda kv: int(kv[0])):
            batches.add_metric([size], n)
        yield batches
        queue = GaugeMetricFamily(
            "cellseg_queue_in_flight",
            "Images released to a device queue: dispatched (waiting) or processing",
            labels=["queue", "status"],
        )
        for queue_name, image_status, n in self.per_queue:
            queue.add_metric([queue_name, image_status], n)
        yield queue
        if self.connections is not None:
            sockets = GaugeMetricFamily(
                "cellseg_socketio_connections", "Authenticated Socket.IO connections (process)"
            )
            sockets.add_metric([], self.connections)
            yield sockets
        if self.leader is not None:
            leader = GaugeMetricFamily(
                "cellseg_dispatcher_leader", "1 when this replica's dispatcher is the leader"
            )
            leader.add_metric([], 1.0 if self.leader else 0.0)
            yield leader


async def _hash(client: aioredis.Redis, key: str) -> dict[str, int]:
    raw = await client.hgetall(key)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    pool = request.app.state.pool
    client: aioredis.Redis = request.app.state.redis
    async with asyncio.timeout(2):
        rows = await pool.fetch("SELECT status, count(*) AS n FROM images GROUP BY status")
        per_queue = await pool.fetch(
            "SELECT queue, status, count(*) AS n FROM images "
            "WHERE status IN ('dispatched', 'processing') AND queue IS NOT NULL "
            "GROUP BY queue, status"
        )
        batches = await _hash(client, METRIC_BATCHES)
        images = await _hash(client, METRIC_IMAGES)
    registry = CollectorRegistry()
    connections = getattr(request.app.state, "sio_connections", None)
    dispatcher = getattr(request.app.state, "dispatcher", None)
    registry.register(
        _Snapshot(
            {r["status"]: r["n"] for r in rows},
            batches,
            images,
            [(r["queue"], r["status"], r["n"]) for r in per_queue],
            connections.value if connections is not None else None,
            dispatcher.is_leader if dispatcher is not None else None,
        )
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
