"""Results: one image's (JSON, GeoJSON, COCO, label mask) and a whole job's (merged).

An image that is not ``done`` answers 409 ``not_ready`` with its ``status`` (and its ``error``
when it failed), ``retryable`` while the image is still pending. A job-level download answers
409 ``not_ready`` (``retryable``) while any image is pending;
once the job is terminal it holds every ``done`` image (the JSON form lists every image with
its status and error too).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from backend.deps import CurrentUser, PoolDep, StoreDep
from backend.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from backend.exports import ImagePayload, geojson_files, merge_coco, merge_geojson, zip_json
from backend.routes.jobs import image_error, job_not_found, parse_id
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.jobs import ImageError
from backend.schemas.results import CocoDataset, GeoJson, ImageResult, JobResults
from contracts.db import repo
from contracts.jobs_state import counts_payload, is_terminal, job_status
from contracts.storage import BlobNotFound, BlobStore, StorageUnavailable

router = APIRouter(tags=["results"], responses=ERROR_RESPONSES)

# The downloads pass the stored JSON through as it is (no re-validation of large documents):
# ``response_model`` documents it, and FastAPI returns a ``Response`` unchanged.

FORMATS: dict[str, Literal["result", "geojson", "coco"]] = {
    "json": "result",
    "geojson": "geojson",
    "coco": "coco",
}
MEDIA_TYPES = {
    "json": "application/json",
    "geojson": "application/geo+json",
    "coco": "application/json",
}

FormatQuery = Annotated[
    str,
    Query(
        alias="format",
        description="json, geojson or coco",
        json_schema_extra={"enum": list(FORMATS)},
    ),
]


def _part(fmt: str) -> Literal["result", "geojson", "coco"]:
    part = FORMATS.get(fmt)
    if part is None:
        raise ValidationFailed(
            "invalid_format", f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}"
        )
    return part


def _dumped(error: ImageError | None) -> dict[str, Any] | None:
    return error.model_dump() if error is not None else None


def _not_ready(row: asyncpg.Record) -> Conflict:
    status = row["status"]
    if status == "failed":
        error = image_error(row)
        reason = error.message if error else "no reason recorded"
        return Conflict(
            "not_ready",
            f"the image failed: {reason}",
            details={"status": status, "image_error": error.model_dump() if error else None},
        )
    if status == "cancelled":
        return Conflict("not_ready", "the image was cancelled", details={"status": status})
    return Conflict(
        "not_ready",
        f"the image is {status}; retry when it is done",
        details={"status": status},
        retryable=True,
    )


async def _image_row(
    pool: asyncpg.Pool, user_id: int, job_id: str, image_id: str, part: repo.ResultPart
) -> asyncpg.Record:
    jid, iid = parse_id(job_id), parse_id(image_id)
    row = await repo.get_image_result(pool, user_id, jid, iid, part)
    if row is None:
        raise NotFound("not_found", f"no such image: {iid} in job {jid}")
    if row["status"] != "done" or not row["has_result"]:
        raise _not_ready(row)
    return row


@router.get(
    "/jobs/{job_id}/images/{image_id}/result",
    response_model=ImageResult | GeoJson | CocoDataset,
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def image_result(
    job_id: str, image_id: str, user: CurrentUser, pool: PoolDep, fmt: FormatQuery = "json"
) -> Response:
    """The stored result of one done image: ``json`` (default), ``geojson`` or ``coco``."""
    part = _part(fmt)
    row = await _image_row(pool, user.id, job_id, image_id, part)
    if part == "coco":  # normalise ids exactly as the job-level document does
        item = ImagePayload(str(row["id"]), row["seq"], row["filename"], json.loads(row["payload"]))
        return JSONResponse(merge_coco([item]))
    return Response(row["payload"], media_type=MEDIA_TYPES[fmt])


@router.get(
    "/jobs/{job_id}/images/{image_id}/mask.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def image_mask(
    job_id: str, image_id: str, user: CurrentUser, pool: PoolDep, store: StoreDep
) -> Response:
    """The label image of one done image: 16-bit PNG, 0 = background, k = object k.

    Read from the blob store (``mask_key``); results stored before masks moved there carry
    their bytes in the row."""
    row = await _image_row(pool, user.id, job_id, image_id, "mask_png")
    if row["mask_key"] is None:
        return Response(bytes(row["payload"]), media_type="image/png")
    data = await _blob(store, row["mask_key"], "mask_missing", f"the mask of image {row['id']}")
    return Response(data, media_type="image/png")


async def _terminal_job(
    pool: asyncpg.Pool, user_id: int, job_id: str
) -> tuple[UUID, asyncpg.Record, str]:
    """The user's job, its id and status, once it is terminal; 404 / 409 ``not_ready``."""
    jid: UUID = parse_id(job_id)
    job = await repo.get_job(pool, user_id, jid)
    if job is None:
        raise job_not_found(jid)
    counts = await repo.status_counts(pool, jid)
    status = job_status(counts, job["total"])
    if not is_terminal(status):
        raise Conflict(
            "not_ready",
            f"the job is {status}; its results are available once every image has finished",
            details={"status": status, "counts": counts_payload(counts, job["total"])},
            retryable=True,
        )
    return jid, job, status


@router.get(
    "/jobs/{job_id}/results",
    response_model=JobResults | GeoJson | CocoDataset,
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def job_results(
    job_id: str, user: CurrentUser, pool: PoolDep, fmt: FormatQuery = "json"
) -> Response:
    """The whole job's results once it is terminal: ``json`` (every image with its status and
    result), ``geojson`` (one FeatureCollection) or ``coco`` (one dataset)."""
    part = _part(fmt)
    jid, job, status = await _terminal_job(pool, user.id, job_id)
    rows = await repo.job_results(pool, jid, part)
    done = [
        ImagePayload(str(r["id"]), r["seq"], r["filename"], r["payload"])
        for r in rows
        if r["status"] == "done" and r["payload"] is not None
    ]
    body: dict[str, Any]
    if fmt == "geojson":
        body = merge_geojson(done)
    elif fmt == "coco":
        body = merge_coco(done)
    else:
        body = {
            "job_id": str(jid),
            "status": status,
            "model": job["model"],
            "images": [
                {
                    "image_id": str(r["id"]),
                    "filename": r["filename"],
                    "status": r["status"],
                    "error": _dumped(image_error(r)),
                    "result": r["payload"] if r["status"] == "done" else None,
                }
                for r in rows
            ],
        }
    return JSONResponse(body, media_type=MEDIA_TYPES[fmt])


@router.get(
    "/jobs/{job_id}/images/{image_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def image_preview(
    job_id: str, image_id: str, user: CurrentUser, pool: PoolDep, store: StoreDep
) -> Response:
    """The original of one done image as the viewer shows it: an 8-bit PNG (grey or RGB) of the
    segmented plane or channel, with the percentile contrast the engine normalises with, at
    most 2048 px a side (outlines in image coordinates scale onto it). Results stored without
    a preview answer 404 ``preview_missing``."""
    row = await _image_row(pool, user.id, job_id, image_id, "preview")
    what = f"the preview of image {row['id']}"
    if row["payload"] is None:
        raise NotFound("preview_missing", f"{what} was not made (segmented before previews)")
    data = await _blob(store, row["payload"], "preview_missing", what)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private"})


async def _blob(store: BlobStore, key: str, missing: str, what: str) -> bytes:
    """A blob of a result from the store; 404 ``missing`` when it is gone, 503 when the store
    cannot be reached."""
    try:
        return await asyncio.to_thread(store.get, key)
    except BlobNotFound:
        raise NotFound(missing, f"{what} is missing from the blob store") from None
    except StorageUnavailable as exc:
        raise ServiceUnavailable("storage_unavailable", str(exc), retry_after=30) from exc


@router.get(
    "/jobs/{job_id}/geojson.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def job_geojson_zip(job_id: str, user: CurrentUser, pool: PoolDep) -> Response:
    """The whole job's objects as one GeoJSON FeatureCollection per image, zipped: a
    ``<file stem>.geojson`` per done image (what QuPath imports onto each image; the
    ``format=geojson`` download of ``/results`` merges every image into one collection)."""
    jid, job, status = await _terminal_job(pool, user.id, job_id)
    rows = await repo.job_results(pool, jid, "geojson")
    done = [
        ImagePayload(str(r["id"]), r["seq"], r["filename"], r["payload"])
        for r in rows
        if r["status"] == "done" and r["payload"] is not None
    ]
    name = f"job-{str(jid)[:8]}-geojson.zip"
    return Response(
        zip_json(geojson_files(done)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
