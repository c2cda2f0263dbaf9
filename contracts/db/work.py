"""SQL of the dispatcher and the workers (the gateway's own SQL is in ``repo.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

ACTIVE = ("queued", "dispatched", "processing")


# --- dispatcher --------------------------------------------------------------------------------


async def in_flight_by_queue(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT queue, count(*) AS n FROM images "
        "WHERE status IN ('dispatched', 'processing') GROUP BY queue"
    )
    return {r["queue"]: r["n"] for r in rows if r["queue"]}


async def queued_heads(conn: asyncpg.Connection, per_user: int) -> dict[int, list[str]]:
    """The first ``per_user`` queued image ids of every user, oldest job first."""
    rows = await conn.fetch(
        """
        SELECT user_id, id FROM (
            SELECT user_id, id, row_number() OVER (
                PARTITION BY user_id ORDER BY created_at, job_id, seq) AS rn
            FROM images WHERE status = 'queued') t
        WHERE rn <= $1 ORDER BY user_id, rn
        """,
        per_user,
    )
    heads: dict[int, list[str]] = {}
    for r in rows:
        heads.setdefault(r["user_id"], []).append(str(r["id"]))
    return heads


async def claim_for_dispatch(
    conn: asyncpg.Connection, image_ids: list[str], queue: str
) -> list[tuple[str, int]]:
    """Inside the caller's transaction: lock the still-queued rows (skipping locked ones) and
    mark them dispatched to ``queue``; returns ``(id, dispatch number)`` of each image claimed
    (the number its Celery message carries, see :func:`claim_image`)."""
    rows = await conn.fetch(
        """
        UPDATE images SET status = 'dispatched', queue = $2, dispatched_at = now(),
                          worker = NULL, dispatches = dispatches + 1
        WHERE id IN (SELECT id FROM images WHERE id = ANY($1::uuid[]) AND status = 'queued'
                     FOR UPDATE SKIP LOCKED)
        RETURNING id, dispatches
        """,
        image_ids,
        queue,
    )
    return [(str(r["id"]), int(r["dispatches"])) for r in rows]


async def load_drr_state(conn: asyncpg.Connection) -> tuple[dict[int, float], list[int]]:
    rows = await conn.fetch(
        "SELECT user_id, deficit FROM dispatch_credit ORDER BY last_served NULLS FIRST, user_id"
    )
    return {r["user_id"]: r["deficit"] for r in rows}, [r["user_id"] for r in rows]


async def save_drr_state(
    conn: asyncpg.Connection, deficits: dict[int, float], order: list[int]
) -> None:
    """Persist deficits; ``last_served`` encodes the rotation (earliest = served first)."""
    await conn.executemany(
        """
        INSERT INTO dispatch_credit (user_id, deficit, last_served)
        VALUES ($1, $2, now() + make_interval(secs => $3 * 0.000001))
        ON CONFLICT (user_id) DO UPDATE SET deficit = $2, last_served = EXCLUDED.last_served
        """,
        [(u, deficits.get(u, 0.0), float(i)) for i, u in enumerate(order)],
    )


async def requeue_stale(
    conn: asyncpg.Connection | asyncpg.Pool, dispatched_s: float, processing_s: float
) -> int:
    """Images whose Celery message was lost (Redis restarted without persistence, a worker
    vanished past the visibility timeout) go back to queued: dispatched but not started for
    ``dispatched_s``, or processing for ``processing_s``. A late duplicate is harmless: the
    task's claim and the result upsert are idempotent."""
    result = await conn.execute(
        """
        UPDATE images SET status = 'queued', queue = NULL, dispatched_at = NULL, worker = NULL
        WHERE (status = 'dispatched' AND dispatched_at < now() - make_interval(secs => $1))
           OR (status = 'processing' AND started_at < now() - make_interval(secs => $2))
        """,
        dispatched_s,
        processing_s,
    )
    return int(result.split()[-1])


async def requeue_orphaned(conn: asyncpg.Connection | asyncpg.Pool, queues: list[str]) -> int:
    """Images released to queues that no live worker consumes any more (the dispatcher saw no
    heartbeat there for a grace period) go back to queued, to be dispatched elsewhere. A late
    duplicate is harmless (see :func:`requeue_stale`)."""
    result = await conn.execute(
        """
        UPDATE images SET status = 'queued', queue = NULL, dispatched_at = NULL, worker = NULL
        WHERE status IN ('dispatched', 'processing') AND queue = ANY($1::text[])
        """,
        queues,
    )
    return int(result.split()[-1])


# --- workers -----------------------------------------------------------------------------------


async def claim_image(
    ex: asyncpg.Connection | asyncpg.Pool, image_id: str, worker: str, dispatch: int | None
) -> asyncpg.Record | None:
    """Mark an image processing by ``worker`` (blocks until the dispatcher's transaction
    commits); ``None`` when it is done, failed or cancelled already, or when ``dispatch`` is not
    the image's current dispatch number (a message that was requeued meanwhile, or survived a
    broker restart: the image went out again in a newer message). A message without a number
    (sent by an older gateway) claims any image still in work.

    PostgreSQL tests an UPDATE's condition on the row version of its snapshot first and only
    re-tests a row it had to wait for; a claim that arrives before the dispatcher's transaction
    committed sees the row still queued, with the previous number.
    """
    return await ex.fetchrow(
        """
        UPDATE images i SET status = 'processing', started_at = now(), worker = $2,
                            attempts = i.attempts + 1
        FROM jobs j
        WHERE i.id = $1 AND j.id = i.job_id
          AND (($3::int IS NULL AND i.status IN ('queued', 'dispatched', 'processing'))
               OR (i.dispatches = $3 AND i.status IN ('dispatched', 'processing'))
               -- the row as it was before the dispatcher's transaction committed: match it,
               -- so the claim waits for that commit and checks the committed row again
               OR (i.dispatches = $3 - 1 AND i.status = 'queued'))
        RETURNING i.id, i.job_id, i.user_id, i.seq, i.sha256, i.filename, i.attempts,
                  i.dispatches, j.model, j.threshold, j.min_area, j.plane, j.channel,
                  j.split, j.diameter, j.diameter_auto
        """,
        image_id,
        worker,
        dispatch,
    )


async def store_result(
    conn: asyncpg.Connection,
    image_id: str,
    *,
    objects: int,
    result: dict[str, Any],
    geojson: dict[str, Any],
    coco: dict[str, Any],
    mask_key: str,
    inference_ms: float,
    batch_size: int,
    worker: str,
    preview_key: str | None = None,
) -> None:
    """Upsert the result (keyed by image id: a redelivered image is stored once) and mark the
    image done, atomically (a savepoint inside the caller's transaction, which holds the
    mask's blob lock and has put the mask object ``mask_key``). JSON parts are Python objects
    (the pool's jsonb codec encodes)."""
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO results (image_id, objects, result, geojson, coco, mask_key,
                                 inference_ms, batch_size, worker, preview_key)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (image_id) DO UPDATE SET
                objects = EXCLUDED.objects, result = EXCLUDED.result,
                geojson = EXCLUDED.geojson, coco = EXCLUDED.coco,
                mask_key = EXCLUDED.mask_key, mask_png = NULL,
                preview_key = EXCLUDED.preview_key,
                inference_ms = EXCLUDED.inference_ms,
                batch_size = EXCLUDED.batch_size, worker = EXCLUDED.worker,
                created_at = now()
            """,
            image_id,
            objects,
            result,
            geojson,
            coco,
            mask_key,
            inference_ms,
            batch_size,
            worker,
            preview_key,
        )
        await conn.execute(
            "UPDATE images SET status = 'done', finished_at = now(), error_code = NULL, "
            "error = NULL WHERE id = $1",
            image_id,
        )


async def fail_image(
    ex: asyncpg.Connection | asyncpg.Pool, image_id: str, code: str, message: str
) -> None:
    await ex.execute(
        "UPDATE images SET status = 'failed', finished_at = now(), error_code = $2, error = $3 "
        "WHERE id = $1 AND status <> 'done'",
        image_id,
        code,
        message[:2000],
    )


async def job_counts(pool: asyncpg.Pool, job_id: str) -> tuple[dict[str, int], int]:
    """Image counts per status of a job, and its total."""
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM images WHERE job_id = $1 GROUP BY status", job_id
    )
    counts = {r["status"]: r["n"] for r in rows}
    return counts, sum(counts.values())


# One round trip per finished image; the two service-wide counts read the partial indexes of
# migration 003 (images_finished, images_waiting), so its cost follows the work in hand, not
# how many images are retained.
JOB_PROGRESS_SQL = """
WITH mine AS (SELECT status, created_at, started_at FROM images WHERE job_id = $1),
     per AS (SELECT status, count(*) AS n FROM mine GROUP BY status),
     first AS (
         SELECT min(created_at) AS t FROM mine WHERE status IN ('queued', 'dispatched')
     ),
     recent AS (
         SELECT count(*) AS n, min(started_at) AS since FROM images
         WHERE status IN ('done', 'failed') AND finished_at > now() - interval '60 seconds'
     )
SELECT
    (SELECT array_agg(status) FROM per) AS statuses,
    (SELECT array_agg(n) FROM per) AS counts,
    (SELECT n FROM recent) AS recent,
    (SELECT extract(epoch FROM now() - since) FROM recent) AS recent_span_s,
    (SELECT extract(epoch FROM now() - min(started_at)) FROM mine) AS job_elapsed_s,
    (SELECT count(*) FROM images, first
      WHERE first.t IS NOT NULL
        AND images.status IN ('queued', 'dispatched', 'processing')
        AND images.created_at < first.t AND images.job_id <> $1) AS ahead,
    (SELECT t IS NOT NULL FROM first) AS waiting
"""


@dataclass(frozen=True)
class JobProgress:
    """A job's image counts per status and total (as :func:`job_counts`), the images of all
    users waiting ahead of its first waiting image (``None`` when it has nothing waiting), and
    the timings its ETA is estimated from (``workers.eta``)."""

    counts: dict[str, int]
    total: int
    position: int | None
    job_elapsed_s: float | None
    recent: int
    recent_span_s: float | None


async def job_progress(pool: asyncpg.Connection | asyncpg.Pool, job_id: str) -> JobProgress:
    """:class:`JobProgress` of ``job_id``, in one round trip."""
    row = await pool.fetchrow(JOB_PROGRESS_SQL, job_id)
    counts = dict(zip(row["statuses"] or [], row["counts"] or [], strict=True))

    def seconds(value: Any) -> float | None:
        return None if value is None else float(value)

    return JobProgress(
        counts=counts,
        total=sum(counts.values()),
        position=int(row["ahead"]) if row["waiting"] else None,
        job_elapsed_s=seconds(row["job_elapsed_s"]),
        recent=int(row["recent"]),
        recent_span_s=seconds(row["recent_span_s"]),
    )


# --- retention ---------------------------------------------------------------------------------


async def take_expired_jobs(
    conn: asyncpg.Connection, older_than_s: float, limit: int
) -> tuple[list[str], int, int]:
    """Inside the caller's transaction: delete up to ``limit`` finished jobs (every image done,
    failed or cancelled) that finished more than ``older_than_s`` seconds ago (database clock),
    with their images and results, and queue their upload and mask keys in
    ``blob_deletions``. Returns the job ids deleted and how many images and results went."""
    rows = await conn.fetch(
        """
        SELECT j.id FROM jobs j
        WHERE j.created_at < now() - make_interval(secs => $1)
          AND NOT EXISTS (SELECT 1 FROM images i WHERE i.job_id = j.id
                          AND i.status IN ('queued', 'dispatched', 'processing'))
          AND COALESCE(j.finished_at,
                       (SELECT max(i.finished_at) FROM images i WHERE i.job_id = j.id),
                       j.created_at) < now() - make_interval(secs => $1)
        ORDER BY j.created_at
        LIMIT $2
        FOR UPDATE OF j SKIP LOCKED
        """,
        older_than_s,
        limit,
    )
    ids = [r["id"] for r in rows]
    if not ids:
        return [], 0, 0
    counts = await conn.fetchrow(
        "SELECT count(*) AS images, count(r.image_id) AS results FROM images i "
        "LEFT JOIN results r ON r.image_id = i.id WHERE i.job_id = ANY($1::uuid[])",
        ids,
    )
    await conn.execute(
        """
        INSERT INTO blob_deletions (key, kind)
        SELECT DISTINCT sha256, 'upload' FROM images WHERE job_id = ANY($1::uuid[])
        UNION
        SELECT DISTINCT r.mask_key, 'mask' FROM results r JOIN images i ON i.id = r.image_id
        WHERE i.job_id = ANY($1::uuid[]) AND r.mask_key IS NOT NULL
        UNION
        SELECT DISTINCT r.preview_key, 'mask' FROM results r JOIN images i ON i.id = r.image_id
        WHERE i.job_id = ANY($1::uuid[]) AND r.preview_key IS NOT NULL
        ON CONFLICT (key) DO NOTHING
        """,
        ids,
    )
    await conn.execute("DELETE FROM jobs WHERE id = ANY($1::uuid[])", ids)  # cascades
    return [str(i) for i in ids], int(counts["images"]), int(counts["results"])


async def pending_blob_deletions(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Inside the caller's transaction: lock up to ``limit`` queued deletions
    ``(key, kind)`` (skipping ones another run holds)."""
    return list(
        await conn.fetch(
            "SELECT key, kind FROM blob_deletions ORDER BY key LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
    )


async def referenced_blobs(conn: asyncpg.Connection, keys: list[str]) -> set[str]:
    """Which of these keys some row still refers to (an upload by ``images.sha256``, a mask by
    ``results.mask_key``, a preview by ``results.preview_key``)."""
    rows = await conn.fetch(
        "SELECT sha256 AS key FROM images WHERE sha256 = ANY($1::text[]) "
        "UNION SELECT mask_key FROM results WHERE mask_key = ANY($1::text[]) "
        "UNION SELECT preview_key FROM results WHERE preview_key = ANY($1::text[])",
        keys,
    )
    return {r["key"] for r in rows}


async def forget_blob_deletions(conn: asyncpg.Connection, keys: list[str]) -> None:
    await conn.execute("DELETE FROM blob_deletions WHERE key = ANY($1::text[])", keys)
