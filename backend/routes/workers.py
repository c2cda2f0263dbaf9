"""``GET /api/v1/workers`` (admin): the live workers, from their heartbeats in Redis."""

from __future__ import annotations

from fastapi import APIRouter

from backend.deps import AdminKey, RedisDep, SettingsDep
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.workers import WorkerList
from contracts.heartbeats import live_workers, serving_queues

router = APIRouter(tags=["workers"], responses=ERROR_RESPONSES)


@router.get("/workers")
async def list_workers(_admin: AdminKey, redis: RedisDep, settings: SettingsDep) -> WorkerList:
    """Every worker with a live heartbeat: queue, device, models, batch ceilings, free device
    memory, tasks in flight and whether it drains; and per queue, how many take work."""
    workers = await live_workers(redis, queues=settings.queues)
    return WorkerList.model_validate(
        {"workers": [w.to_json() for w in workers], "queues": serving_queues(workers)}
    )
