"""Jobs: create (multipart upload), list, read, cancel.

Hooks (optional, set by the dispatcher/Socket.IO layer on ``app.state``; sync or async; a
failing hook is logged, never fails the request):

- ``on_job_created(job_id: UUID)`` after a job's rows committed;
- ``on_images_cancelled(job_id: UUID, image_ids: list[UUID])`` after a cancel changed images;
- ``on_job_finished(job_id: UUID)`` when a cancel made the job terminal and this request won
  the ``jobs.finished_at`` guard (so ``job.done`` is emitted exactly once).
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import asyncpg
from fastapi import APIRouter, Query, Request

from backend.deps import CurrentUser, PoolDep, SettingsDep
from backend.errors import NotFound, ValidationFailed
from backend.forms import read_multipart
from backend.imagecheck import check_choice, check_diameter
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.fields import multipart_body
from backend.schemas.jobs import (
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    TEXT_FIELDS,
    Counts,
    CreatedImage,
    ImageError,
    JobCancelled,
    JobCreated,
    JobDetail,
    JobForm,
    JobImage,
    JobPage,
    JobSummary,
)
from backend.uploads import UploadBatch, about_file
from contracts.db import repo
from contracts.jobs_state import counts_payload, is_terminal, job_status
from contracts.outcomes import outcome
from contracts.requests import (
    DEFAULT_MIN_AREA,
    DEFAULT_SPLIT,
    DEFAULT_THRESHOLD,
    MODEL_NAMES,
    diameter_of,
)
from contracts.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

MULTIPART_OVERHEAD_BYTES = 64 * 1024
MULTIPART_OVERHEAD_PER_FILE = 2 * 1024


# --- parameters --------------------------------------------------------------------------------


def parse_id(value: str) -> UUID:
    """A path id; malformed ids are simply not found (404, like another user's)."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound("not_found", f"no such job or image: {value!r}") from None


def job_not_found(job_id: UUID | str) -> NotFound:
    return NotFound("not_found", f"no such job: {job_id}")


# --- serialisation -----------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def image_error(row: asyncpg.Record) -> ImageError | None:
    """A failed image's reason with the ``retryable`` of its code (``contracts.outcomes``)."""
    if row["error_code"] is None and row["error"] is None:
        return None
    found = outcome(row["error_code"])
    return ImageError(
        code=row["error_code"] or found.code,
        message=row["error"] or "",
        retryable=found.retryable,
    )


def job_summary(job: asyncpg.Record, counts: dict[str, int]) -> dict[str, Any]:
    """The fields of :class:`JobSummary` (``JobDetail`` adds the images)."""
    total = job["total"]
    return {
        "id": job["id"],
        "status": job_status(counts, total),
        "model": job["model"],
        "threshold": job["threshold"],
        "min_area": job["min_area"],
        "plane": job["plane"],
        "channel": job["channel"],
        "split": job["split"],
        "diameter": diameter_of(job),
        "created_at": iso(job["created_at"]),
        "finished_at": iso(job["finished_at"]),
        "counts": Counts(**counts_payload(counts, total)),
    }


async def call_hook(request: Request, name: str, job_id: UUID, *args: Any) -> None:
    """Call ``app.state.<name>(job_id, *args)`` if set (awaiting it if async); log failures."""
    hook = getattr(request.app.state, name, None)
    if hook is None:
        return
    try:
        outcome = hook(job_id, *args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # a hook must not fail a request whose rows already committed
        log.exception("hook %s failed for job %s", name, job_id)


# --- routes ------------------------------------------------------------------------------------


async def accept_job(
    request: Request,
    user: CurrentUser,
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    file_field: str = "files",
    max_files: int | None = None,
    files_limit: str = "per job (MAX_FILES_PER_JOB)",
    sync: bool = False,
) -> tuple[UUID, list[repo.NewImage], asyncpg.Record]:
    """Stream the multipart uploads to storage and commit the job and its images (queued).

    Nothing is kept when any part of the request fails. Returns the job id, its images and the
    job row; the caller answers."""
    max_files = max_files or settings.max_files_per_job
    max_bytes = settings.max_upload_mb * 1024 * 1024
    batch = UploadBatch(
        settings.upload_dir,
        max_total_bytes=max_bytes,
        max_pixels=settings.max_image_pixels,
        store=request.app.state.store,
    )
    try:
        form = await read_multipart(
            request,
            batch,
            file_field=file_field,
            max_files=max_files,
            files_limit=files_limit,
            text_fields=TEXT_FIELDS,
            max_body_bytes=max_bytes
            + MULTIPART_OVERHEAD_BYTES
            + MULTIPART_OVERHEAD_PER_FILE * max_files,
        )
        if not batch.files:
            hint = f" (got fields: {', '.join(form.ignored_fields)})" if form.ignored_fields else ""
            raise ValidationFailed(
                "no_files", f"no files: send one or more images in the '{file_field}' field{hint}"
            )
        if form.ignored_fields:
            known = ", ".join([file_field, *TEXT_FIELDS])
            raise ValidationFailed(
                "unknown_field",
                f"unknown field(s): {', '.join(sorted(set(form.ignored_fields)))}; "
                f"this endpoint takes: {known}",
                details={"fields": sorted(set(form.ignored_fields))},
            )
        model = form.values.get("model")
        if model is None:
            raise ValidationFailed(
                "unknown_model", f"the 'model' field is required; one of: {', '.join(MODEL_NAMES)}"
            )
        threshold = form.values.get("threshold", DEFAULT_THRESHOLD)
        min_area = form.values.get("min_area", DEFAULT_MIN_AREA)
        plane, channel = form.values.get("plane"), form.values.get("channel")
        split = form.values.get("split", DEFAULT_SPLIT)
        diameter = form.values.get("diameter")
        for f in batch.files:  # the form's fields may follow the files: checked once all are in
            try:
                check_choice(f.header, plane, channel, f.filename)
                check_diameter(diameter, f.header.width, f.header.height)
            except ValidationFailed as exc:
                raise about_file(exc, f.filename, f.seq) from None
        job_id = uuid4()
        images = [
            repo.NewImage(
                id=uuid4(),
                seq=f.seq,
                filename=f.filename,
                sha256=f.sha256,
                size_bytes=f.size_bytes,
                width=f.header.width,
                height=f.header.height,
            )
            for f in batch.files
        ]
        job = await batch.commit(
            pool,
            lambda conn: repo.create_job_with_images(
                conn,
                job_id=job_id,
                user_id=user.id,
                model=model,
                threshold=threshold,
                min_area=min_area,
                images=images,
                sync=sync,
                plane=plane,
                channel=channel,
                split=split,
                diameter=diameter,
            ),
        )
    finally:
        await batch.discard(pool)  # no-op once committed
    await call_hook(request, "on_job_created", job_id)
    return job_id, images, job


@router.post("/jobs", status_code=202, openapi_extra=multipart_body(JobForm))
async def create_job(
    request: Request, user: CurrentUser, settings: SettingsDep, pool: PoolDep
) -> JobCreated:
    """Upload images for segmentation (multipart). Answers only once every upload is stored
    and the job's rows are committed; nothing is kept when any part of the request fails."""
    job_id, images, job = await accept_job(request, user, settings, pool)
    return JobCreated(
        id=job_id,
        status=job_status({"queued": len(images)}, len(images)),
        model=job["model"],
        threshold=job["threshold"],
        min_area=job["min_area"],
        plane=job["plane"],
        channel=job["channel"],
        split=job["split"],
        diameter=diameter_of(job),
        images=[CreatedImage(id=im.id, filename=im.filename, status="queued") for im in images],
        created_at=iso(job["created_at"]) or "",
    )


@router.get("/jobs")
async def list_jobs(
    user: CurrentUser,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobPage:
    """The caller's jobs, newest first: ``{items, total, limit, offset}`` (offset paging)."""
    rows, total = await repo.list_jobs(pool, user.id, limit=limit, offset=offset)
    return JobPage(
        items=[
            JobSummary(**job_summary(r, r["counts"]), filenames=list(r["filenames"])) for r in rows
        ],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, user: CurrentUser, pool: PoolDep) -> JobDetail:
    """One of the caller's jobs with its counts and every image's status and error."""
    jid = parse_id(job_id)
    job = await repo.get_job(pool, user.id, jid)
    if job is None:
        raise job_not_found(jid)
    images = await repo.job_images(pool, jid)
    counts: dict[str, int] = {}
    for im in images:
        counts[im["status"]] = counts.get(im["status"], 0) + 1
    return JobDetail(
        **job_summary(job, counts),
        filenames=[im["filename"] for im in images],
        images=[
            JobImage(
                id=im["id"],
                filename=im["filename"],
                status=im["status"],
                error=image_error(im),
                objects=im["objects"],
                width=im["width"],
                height=im["height"],
            )
            for im in images
        ],
    )


async def cancel_and_notify(
    request: Request, pool: asyncpg.Pool, jid: UUID, total: int
) -> tuple[dict[str, int], str]:
    """Cancel what has not started, emit through the hooks; returns (counts, job status)."""
    async with pool.acquire() as conn:
        outcome = await repo.cancel_job(conn, jid)
    status = job_status(outcome.counts, total)
    if outcome.cancelled_ids:
        await call_hook(request, "on_images_cancelled", jid, outcome.cancelled_ids)
    if is_terminal(status) and await repo.mark_job_finished(pool, jid):
        await call_hook(request, "on_job_finished", jid)
    return outcome.counts, status


@router.delete("/jobs/{job_id}")
async def cancel_job(
    job_id: str, request: Request, user: CurrentUser, pool: PoolDep
) -> JobCancelled:
    """Cancel the job's images that have not started; running ones finish. Answers the counts
    afterwards (``running`` = images still processing). Idempotent."""
    jid = parse_id(job_id)
    job = await repo.get_job(pool, user.id, jid)
    if job is None:
        raise job_not_found(jid)
    counts, status = await cancel_and_notify(request, pool, jid, job["total"])
    return JobCancelled(
        id=jid,
        status=status,
        cancelled=counts.get("cancelled", 0),
        running=counts.get("processing", 0),
        done=counts.get("done", 0),
        failed=counts.get("failed", 0),
    )
