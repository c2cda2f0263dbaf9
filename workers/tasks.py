"""The one task: run one image through the engine and store its result.

Tasks take an image id and the dispatch number it was sent with, and re-fetch everything; they
are idempotent (a done, failed or cancelled image, or one sent again in a newer message, returns
at once; the result upsert is keyed by image id), which is what makes late acks, redelivery and
requeueing after a lost worker or a broker restart safe.

Every claimed image ends its task done, failed with a reason, or queued again: database calls
are retried on a fresh connection while PostgreSQL restarts (:mod:`contracts.transient`); what
a dependency restart still makes fail puts the image back in the queue (failed after
``MAX_ATTEMPTS`` claims); anything else fails the image with ``internal_error`` and the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from functools import lru_cache
from typing import Any

import asyncpg
import numpy as np
from celery import Task
from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down

from contracts.db import recovery, repo, work
from contracts.outcomes import code_for, outcome
from contracts.requests import diameter_of
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
from contracts.transient import TRANSIENT
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

MAX_ATTEMPTS = 8
"""Claims of one image before a failure that keeps coming back fails it instead of requeueing."""


@lru_cache(maxsize=1)
def blob_store() -> BlobStore:
    """The process's blob store (``STORAGE_URL``): uploads are read and masks written there."""
    settings = get_settings()
    return open_store(settings.storage_location, region=settings.aws_region)


async def save_result(
    conn: asyncpg.Connection,
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
    async with conn.transaction():
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


@app.task(name=TASK_SEGMENT, bind=True, acks_late=True, reject_on_worker_lost=True)
def segment_image(self: Task, image_id: str, dispatch: int | None = None) -> str:
    rt = get_runtime()
    with rt.task():
        return _segment(rt, image_id, dispatch)


def _segment(rt: WorkerRuntime, image_id: str, dispatch: int | None) -> str:
    name = rt.worker.worker_name
    row = rt.db(lambda c: work.claim_image(c, image_id, name, dispatch), "claim")
    if row is None:
        return "skipped"  # finished, cancelled, or sent again in a newer message
    publish_image(rt, row, "processing")
    try:
        result = _process(rt, row)
    except TRANSIENT as exc:
        return _give_back(rt, row, exc)
    except Exception as exc:  # a bug or an unforeseen error: fail the image with the reason
        log.exception("image %s failed unexpectedly", image_id)
        result = _fail(rt, row, "internal_error", f"{type(exc).__name__}: {exc}")
    _announce(rt, row)
    return result


def _process(rt: WorkerRuntime, row: asyncpg.Record) -> str:
    """Run the image and store its result (``done``), or fail it for a reason of its own
    (``failed``). Transient errors propagate."""
    image_id = str(row["id"])
    store = blob_store()
    try:
        data = store.get(upload_key(row["sha256"]))
        params = SegmentationParams(
            float(row["threshold"]), int(row["min_area"]), row["split"], diameter_of(row)
        )
        image, preview = decode_original(rt, data, row)
        result = rt.engine.submit(image, row["model"], params).result(
            timeout=rt.settings.task_time_limit_s
        )
    except (EngineError, BlobNotFound) as exc:
        code, message = failure(exc)
        return _fail(rt, row, code, message)
    fields: dict[str, Any] = {
        "objects": len(result.objects),
        "result": {**result.to_json(), "width": result.width, "height": result.height},
        "geojson": result.to_geojson(),
        "coco": result.to_coco(image_id=int(row["seq"]) + 1, file_name=row["filename"]),
        "inference_ms": result.timings_ms["inference"],
        "batch_size": max(result.batch_sizes),
        "worker": rt.worker.worker_name,
    }
    mask_png = result.mask_png()
    rt.db(lambda c: save_result(c, store, image_id, mask_png, preview, **fields), "save result")
    rt.count_image("done")
    rt.metrics.observe_image(row["model"], "done", result.timings_ms["queue"])
    publish_image(
        rt,
        row,
        "done",
        objects=len(result.objects),
        inference_ms=result.timings_ms["inference"],
    )
    return "done"


def _fail(rt: WorkerRuntime, row: asyncpg.Record, code: str, message: str) -> str:
    image_id = str(row["id"])
    rt.db(lambda c: work.fail_image(c, image_id, code, message), "fail image")
    rt.count_image("failed")
    rt.metrics.observe_image(row["model"], "failed")
    error = {"code": code, "message": message, "retryable": outcome(code).retryable}
    publish_image(rt, row, "failed", error=error)
    return "failed"


def _give_back(rt: WorkerRuntime, row: asyncpg.Record, exc: BaseException) -> str:
    """A dependency failed mid-task: the image goes back to the queue (or fails, once it has
    been claimed ``MAX_ATTEMPTS`` times)."""
    image_id = str(row["id"])
    reason = f"{type(exc).__name__}: {exc}"
    try:
        if int(row["attempts"]) >= MAX_ATTEMPTS:
            message = f"gave up after {MAX_ATTEMPTS} tries: {reason}"
            storage = isinstance(exc, StorageUnavailable)
            code = "storage_unavailable" if storage else "internal_error"
            result = _fail(rt, row, code, message)
            _announce(rt, row)
            return result
        dispatch = int(row["dispatches"])
        rt.db(lambda c: recovery.requeue_image(c, image_id, dispatch), "requeue")
    except TRANSIENT as again:  # PostgreSQL down for the whole retry budget
        log.error("image %s left processing (%s); the stale sweep requeues it", image_id, again)
        return "stranded"
    log.warning("image %s requeued after %s", image_id, reason)
    return "requeued"


def _announce(rt: WorkerRuntime, row: asyncpg.Record) -> None:
    """The job's progress (and ``job.done``); never fails the task: the dispatcher announces a
    finished job whose ``job.done`` was not sent."""
    try:
        publish_job(rt, str(row["job_id"]), row["user_id"])
    except Exception as exc:
        log.warning("progress of job %s not published: %s", row["job_id"], exc)
