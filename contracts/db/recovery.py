"""SQL that puts work back after a crash or a restart, and finds unannounced finished jobs.

Everything here is safe to run twice and safe against late messages: an image put back in the
queue goes out again with a new dispatch number, and a task holding the old number does
nothing (:func:`contracts.db.work.claim_image`); results are upserted by image id.
"""

from __future__ import annotations

import asyncpg

from contracts.db.repo import Executor

REQUEUE = "status = 'queued', queue = NULL, dispatched_at = NULL, worker = NULL"


def _count(result: str) -> int:
    return int(result.split()[-1])


async def requeue_lost_workers(ex: Executor, workers: list[str], queues: list[str]) -> int:
    """A worker's heartbeat expired without it draining (killed, OOM, host lost): what it was
    processing, and what was released to its queue and not started (it may have held those
    messages unacknowledged), goes back to queued."""
    result = await ex.execute(
        f"""
        UPDATE images SET {REQUEUE}
        WHERE (status = 'processing' AND worker = ANY($1::text[]))
           OR (status = 'dispatched' AND queue = ANY($2::text[]))
        """,
        workers,
        queues,
    )
    return _count(result)


async def requeue_dispatched(ex: Executor, queues: list[str]) -> int:
    """The broker lost its messages (Redis restarted without persistence): everything released
    to ``queues`` and not started goes back to queued at once."""
    result = await ex.execute(
        f"UPDATE images SET {REQUEUE} WHERE status = 'dispatched' AND queue = ANY($1::text[])",
        queues,
    )
    return _count(result)


async def requeue_image(ex: Executor, image_id: str, dispatch: int) -> bool:
    """A task gives its image back (a dependency failed mid-task): queued again, unless it was
    finished, or requeued and claimed again by another task meanwhile."""
    result = await ex.execute(
        f"UPDATE images SET {REQUEUE} WHERE id = $1 AND status = 'processing' AND dispatches = $2",
        image_id,
        dispatch,
    )
    return _count(result) == 1


async def mark_done_sent(ex: Executor, job_id: str) -> None:
    """``job.done`` of this job was published."""
    await ex.execute("UPDATE jobs SET done_sent_at = now() WHERE id = $1", job_id)


async def unannounced_jobs(ex: Executor, settled_s: float, limit: int) -> list[asyncpg.Record]:
    """Jobs whose every image is finished for ``settled_s`` seconds and whose ``job.done`` was
    never published (the publish failed, or the process that should have sent it died):
    ``(id, user_id)``, with ``jobs.finished_at`` set on the way if it was not."""
    return list(
        await ex.fetch(
            """
            UPDATE jobs j SET finished_at = COALESCE(j.finished_at, now())
            WHERE j.id IN (
                SELECT j2.id FROM jobs j2
                WHERE j2.done_sent_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.job_id = j2.id
                                  AND i.status IN ('queued', 'dispatched', 'processing'))
                  AND COALESCE(j2.finished_at,
                               (SELECT max(i.finished_at) FROM images i WHERE i.job_id = j2.id),
                               j2.created_at) < now() - make_interval(secs => $1)
                ORDER BY j2.created_at LIMIT $2)
            RETURNING j.id, j.user_id
            """,
            settled_s,
            limit,
        )
    )
