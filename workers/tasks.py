"""The one task: run one image through the engine and store its result.

Tasks take an image id and re-fetch everything; they are idempotent (a done, failed or
cancelled image returns at once; the result upsert is keyed by image id), which is what makes
late acks and redelivery after a lost worker safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from functools import lru_cache
from typing import Any

import asyncpg
import numpy as np
import redis
from celery import Task
from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down

from contracts.db import repo, work
from contracts.outcomes import code_for, outcome
from contracts.settings import get_settings
from contracts.storage import (
    BlobNotFound,
    BlobStore,
    StorageUnavailable,
    mask_key,
    open_store,
    preview_key,
    upload_key,
)
from ml_service.errors import EngineError, UnknownModel
from ml_service.imaging.imageio import decode_image
from ml_service.imaging.preview import preview_png
from ml_service.serving.engine import SegmentationParams
from workers.celery_app import TASK_SEGMENT, app
from workers.progress import publish_image, publish_job
from workers.runtime import (
    WorkerRuntime,
    get_runtime,
    get_runtime_if_started,
    start_runtime,
    stop_runtime,
)

log = logging.getLogger(__name__)

TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    redis.ConnectionError,
    StorageUnavailable,
)


@lru_cache(maxsize=1)
def blob_store() -> BlobStore:
    """The process's blob store (``STORAGE_URL``): uploads are read and masks written there."""
    settings = get_settings()
    return open_store(settings.storage_location, region=settings.aws_region)


async def save_result(
    pool: asyncpg.Pool,
    store: BlobStore,
    image_id: str,
    mask_png: bytes,
    preview: bytes | None = None,
    **fields: Any,
) -> None:
    """Put the mask and the preview (content addressed: skipped when present) and upsert the
    result row in one transaction holding their blob locks, so retention never deletes them in
    between."""
    mask = mask_key(hashlib.sha256(mask_png).hexdigest())
    blobs = {mask: mask_png}
    shown = None
    if preview is not None:
        shown = preview_key(hashlib.sha256(preview).hexdigest())
        blobs[shown] = preview
    async with pool.acquire() as conn, conn.transaction():
        await repo.lock_blobs(conn, list(blobs))
        for key, data in blobs.items():
            if not await asyncio.to_thread(store.exists, key):
                await asyncio.to_thread(store.put_bytes, key, data)
        await work.store_result(conn, image_id, mask_key=mask, preview_key=shown, **fields)


def decode_original(rt: WorkerRuntime, data: bytes, row: Any) -> tuple[np.ndarray, bytes]:
    """The image to segment (the job's ``plane``/``channel`` of a stack) and its preview.

    Raises:
        EngineError: the engine's decoding errors (``ml_service.imaging.imageio``)."""
    image = decode_image(data, rt.engine.settings.max_image_pixels, row["plane"], row["channel"])
    return image, preview_png(image)


def failure(exc: EngineError | BlobNotFound) -> tuple[str, str]:
    """The ``(code, message)`` stored for an image that failed with ``exc``; the code is one
    of :data:`contracts.outcomes.OUTCOMES`, which the gateway answers with."""
    if isinstance(exc, BlobNotFound):
        return "upload_missing", f"the upload {exc.key or exc} is missing from the blob store"
    if isinstance(exc, UnknownModel):  # the gateway accepted the name: this worker lacks it
        return "model_unavailable", f"the worker does not serve it: {exc.message}"
    return code_for(exc.code), exc.message


@worker_init.connect
def _load_engine(**_: Any) -> None:
    """Load, verify and warm up the models before the worker consumes anything."""
    start_runtime()


@worker_ready.connect
def _watch_consumer(sender: Any = None, **_: Any) -> None:
    """Guard the consumer against stalling silently after a broker restart (see
    :mod:`workers.watchdog`)."""
    get_runtime().watch_consumer(sender)


@worker_shutting_down.connect
def _drain(**_: Any) -> None:
    """SIGTERM/SIGINT: advertise draining at once; Celery stops consuming and finishes (and
    acks) the tasks in flight before ``worker_shutdown``."""
    rt = get_runtime_if_started()
    if rt is not None:
        rt.drain()


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
    with rt.task():
        return _segment(rt, image_id)


def _segment(rt: WorkerRuntime, image_id: str) -> str:
    row = rt.run(work.claim_image(rt.pool, image_id))
    if row is None:
        return "skipped"  # done, failed or cancelled already: redelivery or stale message
    publish_image(rt, row, "processing")
    store = blob_store()
    try:
        data = store.get(upload_key(row["sha256"]))
        params = SegmentationParams(float(row["threshold"]), int(row["min_area"]))
        image, preview = decode_original(rt, data, row)
        result = rt.engine.submit(image, row["model"], params).result(
            timeout=rt.settings.task_time_limit_s
        )
    except (EngineError, BlobNotFound) as exc:
        code, message = failure(exc)
        rt.run(work.fail_image(rt.pool, image_id, code, message))
        rt.count_image("failed")
        rt.metrics.observe_image(row["model"], "failed")
        error = {"code": code, "message": message, "retryable": outcome(code).retryable}
        publish_image(rt, row, "failed", error=error)
        publish_job(rt, str(row["job_id"]), row["user_id"])
        return "failed"
    body = {**result.to_json(), "width": result.width, "height": result.height}
    rt.run(
        save_result(
            rt.pool,
            store,
            image_id,
            result.mask_png(),
            preview,
            objects=len(result.objects),
            result=body,
            geojson=result.to_geojson(),
            coco=result.to_coco(image_id=int(row["seq"]) + 1, file_name=row["filename"]),
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
