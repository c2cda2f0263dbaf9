"""``GET /api/v1/models``: the servable models, what live workers run them, and the limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.deps import CurrentUser, RedisDep, SettingsDep
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.models import Limits, ModelList
from contracts.heartbeats import WorkerHeartbeat, live_workers
from contracts.requests import MODEL_NAMES

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


def merge_workers(workers: list[WorkerHeartbeat]) -> list[dict[str, Any]]:
    """One entry per name in ``MODEL_NAMES``: variant and input size (from the first live
    worker that reports the model; None without one) and ``workers`` serving it."""
    merged: dict[str, dict[str, Any]] = {
        name: {"name": name, "variant": None, "input_size": None, "workers": []}
        for name in MODEL_NAMES
    }
    for worker in workers:
        for model in worker.models:
            entry = merged.get(str(model.get("name")))
            if entry is None:  # a model the gateway does not accept jobs for
                continue
            if entry["variant"] is None:
                entry["variant"] = model.get("variant")
                entry["input_size"] = model.get("input_size")
            entry["workers"].append(
                {
                    "worker": worker.name,
                    "queue": worker.queue,
                    "device": worker.device,
                    "batching": model.get("batching"),
                }
            )
    return list(merged.values())


@router.get("/models")
async def list_models(_user: CurrentUser, settings: SettingsDep, redis: RedisDep) -> ModelList:
    """Each model with its live workers (``"workers": []`` when none), and upload limits."""
    return ModelList.model_validate(
        {
            "models": merge_workers(await live_workers(redis, queues=settings.queues)),
            "limits": Limits(
                max_upload_mb=settings.max_upload_mb,
                max_files_per_job=settings.max_files_per_job,
                max_image_pixels=settings.max_image_pixels,
            ),
        }
    )
