"""``GET /api/v1/models``: the servable models, who serves them, and the upload limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelWorker(BaseModel):
    worker: str
    queue: str
    device: str
    batching: Any = Field(default=None, description="the worker's batch ceiling and sizes")


class ModelInfo(BaseModel):
    """A model jobs may name; ``variant`` and ``input_size`` come from a live worker (null
    without one); ``workers`` lists those serving it now."""

    name: str
    variant: str | None
    input_size: Any
    workers: list[ModelWorker]


class Limits(BaseModel):
    """Upload limits (``MAX_UPLOAD_MB``, ``MAX_FILES_PER_JOB``, ``MAX_IMAGE_PIXELS``)."""

    max_upload_mb: int
    max_files_per_job: int
    max_image_pixels: int


class ModelList(BaseModel):
    models: list[ModelInfo]
    limits: Limits
