"""Every SQL statement of the gateway, as small async functions.

Each function takes an ``Executor``: an ``asyncpg.Pool`` (one statement, any free connection)
or an ``asyncpg.Connection`` (inside the caller's transaction where it has one). Functions that
need several statements to be atomic (``create_job_with_images``, ``cancel_job``) open their own
transaction (a savepoint when the caller already has one). Nothing here knows about HTTP.

Ownership: every read of a job or image is scoped by ``user_id``; another user's row is simply
not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias
from uuid import UUID

import asyncpg

from contracts.requests import diameter_columns

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection
"""Either has fetch/fetchrow/fetchval/execute; a pool runs each statement on a free connection."""

ResultPart = Literal["result", "geojson", "coco", "mask_png", "preview"]

# Column expression per stored result part. JSON parts are read as text so per-image answers
# can be sent without decoding and re-encoding them.
_PART_AS_TEXT: dict[str, str] = {
    "result": "r.result::text",
    "geojson": "r.geojson::text",
    "coco": "r.coco::text",
    "mask_png": "r.mask_png",
    "preview": "r.preview_key",
}
_PART_DECODED: dict[str, str] = {
    "result": "r.result",
    "geojson": "r.geojson",
    "coco": "r.coco",
}

UPLOAD_LOCK_CLASS = 0x43534755  # "CSGU": pg_advisory_xact_lock(int, int) class of blobs


@dataclass(frozen=True)
class NewImage:
    """One stored upload about to become an ``images`` row."""

    id: UUID
    seq: int
    filename: str
    sha256: str
    size_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class CancelOutcome:
    """What ``cancel_job`` changed: the ids it cancelled and the counts afterwards."""

    cancelled_ids: list[UUID]
    counts: dict[str, int]


# --- users -------------------------------------------------------------------------------------


async def create_user(
    ex: Executor, name: str, api_key_hash: str, *, is_admin: bool = False
) -> asyncpg.Record:
    """Insert a user; returns ``(id, name, is_admin, created_at)``."""
    return await ex.fetchrow(
        "INSERT INTO users (name, api_key_hash, is_admin) VALUES ($1, $2, $3) "
        "RETURNING id, name, is_admin, created_at",
        name,
        api_key_hash,
        is_admin,
    )


async def user_by_key_hash(ex: Executor, api_key_hash: str) -> asyncpg.Record | None:
    """The user whose API key hashes to ``api_key_hash``: ``(id, name, is_admin)`` or None."""
    return await ex.fetchrow(
        "SELECT id, name, is_admin FROM users WHERE api_key_hash = $1", api_key_hash
    )


# --- uploads (content-addressed blobs) ---------------------------------------------------------


async def lock_blobs(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Take transaction-scoped advisory locks on these blob keys (sorted, so no deadlock).

    Held by whoever puts a blob into the store together with the rows that reference it
    (upload commit, a worker storing a mask), and by whoever deletes an unreferenced blob
    (a failed upload's discard, retention), so a blob is never deleted under a commit and a
    writer that finds it present can rely on it. Must run inside a transaction.
    """
    for key in sorted(set(keys)):
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", UPLOAD_LOCK_CLASS, key)


async def lock_uploads(conn: asyncpg.Connection, sha256s: Sequence[str]) -> None:
    """:func:`lock_blobs` of uploads (an upload's key is its sha256)."""
    await lock_blobs(conn, sha256s)


async def upload_referenced(ex: Executor, sha256: str) -> bool:
    """Whether any committed ``images`` row references the blob ``sha256``."""
    return bool(await ex.fetchval("SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = $1)", sha256))


async def referenced_uploads(ex: Executor, sha256s: Sequence[str]) -> set[str]:
    """Which of these uploads some ``images`` row still references."""
    rows = await ex.fetch(
        "SELECT DISTINCT sha256 FROM images WHERE sha256 = ANY($1::text[])", list(sha256s)
    )
    return {r["sha256"] for r in rows}


async def referenced_masks(ex: Executor, keys: Sequence[str]) -> set[str]:
    """Which of these mask keys some ``results`` row still references."""
    rows = await ex.fetch(
        "SELECT DISTINCT mask_key FROM results WHERE mask_key = ANY($1::text[])", list(keys)
    )
    return {r["mask_key"] for r in rows}


# --- jobs --------------------------------------------------------------------------------------


async def create_job_with_images(
    conn: asyncpg.Connection,
    *,
    job_id: UUID,
    user_id: int,
    model: str,
    threshold: float,
    min_area: int,
    images: Sequence[NewImage],
    sync: bool = False,
    plane: int | None = None,
    channel: int | None = None,
    split: bool = True,
    diameter: float | str | None = None,
) -> asyncpg.Record:
    """Insert a job and its images (status ``queued``) in one transaction.

    Returns:
        The job row ``(id, model, threshold, min_area, total, created_at, finished_at, sync,
        plane, channel, split, diameter, diameter_auto)``.
    """
    diameter_px, diameter_auto = diameter_columns(diameter)
    async with conn.transaction():
        job = await conn.fetchrow(
            "INSERT INTO jobs (id, user_id, model, threshold, min_area, total, sync, plane, "
            "channel, split, diameter, diameter_auto) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            "RETURNING id, model, threshold, min_area, total, created_at, finished_at, sync, "
            "plane, channel, split, diameter, diameter_auto",
            job_id,
            user_id,
            model,
            threshold,
            min_area,
            len(images),
            sync,
            plane,
            channel,
            split,
            diameter_px,
            diameter_auto,
        )
        await conn.executemany(
            "INSERT INTO images (id, job_id, user_id, seq, filename, sha256, size_bytes, "
            "width, height) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                (
                    im.id,
                    job_id,
                    user_id,
                    im.seq,
                    im.filename,
                    im.sha256,
                    im.size_bytes,
                    im.width,
                    im.height,
                )
                for im in images
            ],
        )
    return job


_JOB_COLUMNS = (
    "j.id, j.model, j.threshold, j.min_area, j.total, j.created_at, j.finished_at, j.sync, "
    "j.plane, j.channel, j.split, j.diameter, j.diameter_auto"
)
LISTED_FILENAMES = 3
"""File names a row of the jobs list carries (the first ones, in upload order)."""


async def list_jobs(
    ex: Executor, user_id: int, *, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """One page of the user's jobs, newest first, and the user's total number of jobs.

    Offset pagination ordered by ``(created_at DESC, id)``: stable while no job is created
    between two pages (a new job shifts later pages by one). Each row carries ``counts``, a
    ``{status: n}`` dict of its images, and ``filenames``, the first :data:`LISTED_FILENAMES`
    file names in upload order.
    """
    rows = await ex.fetch(
        f"SELECT {_JOB_COLUMNS}, COALESCE(c.counts, '{{}}'::jsonb) AS counts, "
        "ARRAY(SELECT filename FROM images WHERE job_id = j.id ORDER BY seq LIMIT $4) "
        "AS filenames "
        "FROM jobs j LEFT JOIN LATERAL ("
        "  SELECT jsonb_object_agg(s.status, s.n) AS counts FROM ("
        "    SELECT status, count(*) AS n FROM images WHERE job_id = j.id GROUP BY status"
        "  ) s"
        ") c ON TRUE "
        "WHERE j.user_id = $1 ORDER BY j.created_at DESC, j.id LIMIT $2 OFFSET $3",
        user_id,
        limit,
        offset,
        LISTED_FILENAMES,
    )
    total = await ex.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1", user_id)
    return list(rows), int(total)


async def get_job(ex: Executor, user_id: int, job_id: UUID) -> asyncpg.Record | None:
    """The user's job (None when it does not exist or belongs to someone else)."""
    return await ex.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.id = $1 AND j.user_id = $2", job_id, user_id
    )


async def status_counts(ex: Executor, job_id: UUID) -> dict[str, int]:
    """``{status: number of images}`` of a job (statuses with no image are absent)."""
    rows = await ex.fetch(
        "SELECT status, count(*) AS n FROM images WHERE job_id = $1 GROUP BY status", job_id
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def job_images(ex: Executor, job_id: UUID) -> list[asyncpg.Record]:
    """The job's images in upload order, with ``objects`` from their result (None if none)."""
    return list(
        await ex.fetch(
            "SELECT i.id, i.seq, i.filename, i.status, i.error_code, i.error, i.width, "
            "i.height, r.objects "
            "FROM images i LEFT JOIN results r ON r.image_id = i.id "
            "WHERE i.job_id = $1 ORDER BY i.seq",
            job_id,
        )
    )


async def cancel_job(conn: asyncpg.Connection, job_id: UUID) -> CancelOutcome:
    """Cancel the job's images that have not started (``queued``/``dispatched``).

    Images already ``processing`` finish normally. Returns the ids cancelled by this call and
    the job's status counts afterwards, read in the same transaction.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE images SET status = 'cancelled', finished_at = now() "
            "WHERE job_id = $1 AND status IN ('queued', 'dispatched') RETURNING id",
            job_id,
        )
        counts = await status_counts(conn, job_id)
    return CancelOutcome([r["id"] for r in rows], counts)


async def mark_job_finished(ex: Executor, job_id: UUID) -> bool:
    """Set ``jobs.finished_at`` once. True for the single caller that set it.

    The exactly-once guard of ``job.done``: only the caller that gets True emits it.
    """
    row = await ex.fetchrow(
        "UPDATE jobs SET finished_at = now() WHERE id = $1 AND finished_at IS NULL RETURNING id",
        job_id,
    )
    return row is not None


# --- results -----------------------------------------------------------------------------------


async def get_image_result(
    ex: Executor, user_id: int, job_id: UUID, image_id: UUID, part: ResultPart
) -> asyncpg.Record | None:
    """An image of the user's job with one stored result part.

    Returns:
        ``(id, seq, filename, status, error_code, error, payload, mask_key, has_result)``
        where ``payload`` is the part's JSON text (``bytes`` for ``mask_png``, None when the
        mask is in the blob store under ``mask_key``; the preview's blob key for ``preview``,
        None when the result has none) or None when no result is stored;
        None when the image does not exist in that job of that user.
    """
    column = _PART_AS_TEXT[part]
    return await ex.fetchrow(
        f"SELECT i.id, i.seq, i.filename, i.status, i.error_code, i.error, {column} AS payload, "
        "r.mask_key, r.image_id IS NOT NULL AS has_result "
        "FROM images i LEFT JOIN results r ON r.image_id = i.id "
        "WHERE i.id = $1 AND i.job_id = $2 AND i.user_id = $3",
        image_id,
        job_id,
        user_id,
    )


async def job_results(
    ex: Executor, job_id: UUID, part: Literal["result", "geojson", "coco"]
) -> list[asyncpg.Record]:
    """Every image of the job in upload order with one stored result part, decoded.

    Returns:
        Rows ``(id, seq, filename, status, error_code, error, payload)``; ``payload`` is the
        decoded JSON or None for images without a result.
    """
    column = _PART_DECODED[part]
    return list(
        await ex.fetch(
            f"SELECT i.id, i.seq, i.filename, i.status, i.error_code, i.error, {column} AS payload "
            "FROM images i LEFT JOIN results r ON r.image_id = i.id "
            "WHERE i.job_id = $1 ORDER BY i.seq",
            job_id,
        )
    )
