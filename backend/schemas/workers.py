"""``GET /api/v1/workers`` (admin): the live workers of this gateway's queues."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WorkerModel(BaseModel):
    name: str
    variant: str | None = None
    backend: str | None = None
    input_size: Any = None


class WorkerInfo(BaseModel):
    """A worker's last heartbeat (members a newer worker adds are passed on)."""

    model_config = ConfigDict(extra="allow")

    name: str
    queue: str
    device: str
    updated_at: float = Field(description="Unix time of the heartbeat")
    draining: bool
    in_flight: int
    capacity: int
    free_memory_bytes: int | None
    batch_ceilings: dict[str, int]
    models: list[WorkerModel]


class WorkerList(BaseModel):
    workers: list[WorkerInfo]
    queues: dict[str, int] = Field(description="queue → workers taking work")
