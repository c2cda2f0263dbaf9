"""The one task: run one image through the engine and store its result.

Tasks take an image id and re-fetch everything; they are idempotent (a done, failed or
cancelled image returns at once; the result upsert is keyed by image id), which is what makes
late acks and redelivery after a lost worker safe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
import redis
from celery import Task
from celery.signals import worker_init, worker_shutdown

from backend.db import work
from ml_service.engine import SegmentationParams
from ml_service.errors import EngineError
from workers.celery_app import TASK_SEGMENT, app
from workers.progress import publish_image, publish_job
from workers.runtime import get_runtime, start_runtime, stop_runtime

log = logging.getLogger(__name__)

TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    redis.ConnectionError,
)


@worker_init.connect
def _load_engine(**_: Any) -> None:
    """Load, verify and warm up the models before the worker consumes anything."""
    start_runtime()


@worker_shutdown.connect
def _close_engine(**_: Any) -> None:
    stop_runtime()


@app.task(
    name=TASK_SEGMENT,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def segment_image(self: Task, image_id: str) -> str:
    rt = get_runtime()
    row = rt.run(work.claim_image(rt.pool, image_id))
    if row is None:
        return "skipped"  # done, failed or cancelled already: redelivery or stale message
    publish_image(rt, row, "processing")
    path = Path(rt.settings.upload_dir) / row["sha256"]
    try:
        data = path.read_bytes()
        params = SegmentationParams(float(row["threshold"]), int(row["min_area"]))
        result = rt.engine.submit(data, row["model"], params).result(
            timeout=rt.settings.task_time_limit_s
        )
    except (EngineError, FileNotFoundError) as exc:
        code = exc.code if isinstance(exc, EngineError) else "upload_missing"
        message = exc.message if isinstance(exc, EngineError) else f"upload {path.name} missing"
        rt.run(work.fail_image(rt.pool, image_id, code, message))
        rt.count_image("failed")
        rt.metrics.observe_image(row["model"], "failed")
        publish_image(rt, row, "failed", error={"code": code, "message": message})
        publish_job(rt, str(row["job_id"]), row["user_id"])
        return "failed"
    body = {**result.to_json(), "width": result.width, "height": result.height}
    rt.run(
        work.store_result(
            rt.pool,
            image_id,
            objects=len(result.objects),
            result=body,
            geojson=result.to_geojson(),
            coco=result.to_coco(image_id=int(row["seq"]) + 1, file_name=row["filename"]),
            mask_png=result.mask_png(),
            inference_ms=result.timings_ms["inference"],
            batch_size=max(result.batch_sizes),
            worker=rt.worker.worker_name,
        )
    )
    rt.count_image("done")
    rt.metrics.observe_image(row["model"], "done", result.timings_ms["queue"])
    publish_image(
        rt,
        row,
        "done",
        objects=len(result.objects),
        inference_ms=result.timings_ms["inference"],
    )
    publish_job(rt, str(row["job_id"]), row["user_id"])
    return "done"
