"""``POST /api/v1/segment``: one image, answered with its result (for simple scripts).

The image goes through the same upload checks, queue and fair dispatch as any job (a one-image
job marked ``sync``); the request waits up to ``SYNC_TIMEOUT_S`` for it. On timeout the image is
cancelled if it has not started (nothing keeps running for an answer nobody waits for) and the
answer is 504 ``timeout`` with the job and image ids; an image already running finishes and its
result stays available under the job.

A failed image answers with the status, ``code`` and ``retryable`` its cause has in the outcome
table (``contracts.outcomes``): a client fault 4xx (``invalid_image``, ``too_many_objects``,
...), a server fault 5xx (``out_of_memory``, ``engine_closed`` 503; ``upload_missing`` 500);
a cancelled image 409 ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request

from backend.deps import CurrentUser, PoolDep, SettingsDep
from backend.errors import ApiError, outcome_error
from backend.routes.jobs import accept_job, cancel_and_notify
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.fields import multipart_body
from backend.schemas.jobs import SegmentForm
from backend.schemas.results import SegmentAnswer
from contracts.db import repo

router = APIRouter(tags=["segment"], responses=ERROR_RESPONSES)

POLL_S = (0.05, 0.25)  # first and longest interval between status reads


@router.post("/segment", openapi_extra=multipart_body(SegmentForm))
async def segment(
    request: Request, user: CurrentUser, settings: SettingsDep, pool: PoolDep
) -> SegmentAnswer:
    """Multipart: ``file`` (one image), ``model``, ``threshold`` (0.05–0.95, default 0.5),
    ``min_area`` (default 50). Answers 200 with the result (as ``GET .../result``, plus
    ``job_id`` and ``image_id``)."""
    job_id, images, job = await accept_job(
        request,
        user,
        settings,
        pool,
        file_field="file",
        max_files=1,
        files_limit="per request here; send several images with POST /jobs",
        sync=True,
    )
    image_id = images[0].id
    ids = {"job_id": str(job_id), "image_id": str(image_id)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.sync_timeout_s
    delay = POLL_S[0]
    while True:
        row = await repo.get_image_result(pool, user.id, job_id, image_id, "result")
        if row is None:  # pragma: no cover - the row was committed above
            raise ApiError("not_found", "the image vanished", 404, details=ids)
        if row["status"] == "done" and row["payload"] is not None:
            return SegmentAnswer.model_validate({**json.loads(row["payload"]), **ids})
        if row["status"] == "failed":
            raise outcome_error(
                row["error_code"], row["error"] or "", details={**ids, "status": "failed"}
            )
        if row["status"] == "cancelled":
            raise outcome_error(
                "cancelled", "the image was cancelled", details={**ids, "status": "cancelled"}
            )
        if loop.time() >= deadline:
            started = row["status"] == "processing"
            await cancel_and_notify(request, pool, job_id, job["total"])
            hint = (
                f"it is running: fetch the result later under job {job_id}"
                if started
                else "it had not started and was cancelled"
            )
            raise ApiError(
                "timeout",
                f"no result within SYNC_TIMEOUT_S={settings.sync_timeout_s:g} s; {hint}",
                504,
                details={**ids, "status": "processing" if started else "cancelled"},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_S[1])
