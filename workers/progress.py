"""Events of one image's and one job's progress, sent after the database says so."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from contracts import events
from contracts.db import recovery, repo, work
from contracts.jobs_state import counts_payload, is_terminal, job_status
from workers.eta import RateFacts, eta_seconds
from workers.runtime import WorkerRuntime


def publish_image(rt: WorkerRuntime, row: Any, status: str, **extra: Any) -> None:
    job_id, image_id = str(row["job_id"]), str(row["id"])
    rt.events.emit(
        events.IMAGE_UPDATE,
        events.image_update(job_id, image_id, status, **extra),
        events.rooms(row["user_id"], job_id),
    )


def publish_job(rt: WorkerRuntime, job_id: str, user_id: int) -> None:
    """``job.progress`` now; ``job.done`` once, guarded by the database, when it is over. The
    announcement is marked sent only once a gateway got it; otherwise the dispatcher announces
    the job again (:mod:`backend.recovery`)."""
    p = rt.db(lambda c: work.job_progress(c, job_id), "job progress", budget_s=30)
    counts, total, position = p.counts, p.total, p.position
    payload = counts_payload(counts, total)
    facts = RateFacts(
        finished=payload["done"] + payload["failed"],
        job_elapsed_s=p.job_elapsed_s,
        recent=p.recent,
        recent_span_s=p.recent_span_s,
        running=payload["processing"],
    )
    seconds = eta_seconds(payload["queued"] + payload["processing"], position or 0, facts)
    eta = None if seconds is None else round(seconds, 1)
    to = events.rooms(user_id, job_id)
    rt.events.emit(events.JOB_PROGRESS, events.job_progress(job_id, payload, position, eta), to)
    status = job_status(counts, total)
    if not is_terminal(status):
        return
    if rt.db(lambda c: repo.mark_job_finished(c, UUID(job_id)), "job finished", budget_s=30):
        if rt.events.emit(events.JOB_DONE, events.job_done(job_id, status, payload), to):
            rt.db(lambda c: recovery.mark_done_sent(c, job_id), "job.done sent")
