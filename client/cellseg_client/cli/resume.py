"""Picking up a run where it broke off: find the jobs of uploads cut off mid-answer, drop jobs
the server no longer knows."""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime
from pathlib import Path

from cellseg_client.async_client import AsyncClient
from cellseg_client.cli.manifest import Manifest, Pending, RunParams
from cellseg_client.errors import NotFound
from cellseg_client.schema import Job

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 900.0
"""How much earlier than a pending upload (client clock) its job may look created (server
clock) and still be considered."""

MAX_NAME = 200
_DOTS = re.compile(r"\.{2,}")


def sent_name(path: Path) -> str:
    """The file name sent with an upload, already in the form the server stores (NFC, no
    control characters, no ``..``, trimmed, at most 200 characters keeping the suffix), so a
    job can be recognised by its images' names."""
    name = unicodedata.normalize("NFC", path.name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _DOTS.sub(".", name).strip(" .")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        keep = MAX_NAME - len(ext) - 1
        name = stem[:keep] + "." + ext if dot and 0 < len(ext) <= 16 else name[:MAX_NAME]
    return name or "image"


def _created(job: Job) -> float | None:
    if not job.created_at:
        return None
    try:
        return datetime.fromisoformat(job.created_at).timestamp()
    except ValueError:
        return None


async def reconcile(client: AsyncClient, manifest: Manifest) -> int:
    """Settle every ``pending`` upload of the manifest: adopt the job the server made of it
    (same parameters, same file names in the same order, created after it was sent, not yet
    in the manifest) or record it abandoned. Returns how many were adopted."""
    pending = sorted(manifest.state.pending.values(), key=lambda p: p.at)
    if not pending:
        return 0
    params = manifest.params
    known = set(manifest.state.job_ids)
    oldest = pending[0].at - CLOCK_SKEW_S
    candidates: list[Job] = []
    async for job in client.iter_jobs():
        created = _created(job)
        if created is not None and created < oldest:
            break
        if job.id not in known and params.matches(
            RunParams(job.model, job.threshold, job.min_area)
        ):
            candidates.append(job)
    adopted = 0
    for batch in pending:
        match = await _find(client, batch, candidates)
        if match is None:
            manifest.record_abandoned(batch.batch)
            continue
        candidates = [c for c in candidates if c.id != match.id]
        images = {h: im.id for h, im in zip(batch.hashes, match.images, strict=True)}
        manifest.record_uploaded(batch.batch, match.id, images)
        log.info("re-attached job %s (its upload was cut off before the answer)", match.id)
        adopted += 1
    return adopted


async def _find(client: AsyncClient, batch: Pending, candidates: list[Job]) -> Job | None:
    for summary in candidates:
        created = _created(summary)
        if created is not None and created < batch.at - CLOCK_SKEW_S:
            continue
        if summary.counts is not None and summary.counts.total != len(batch.hashes):
            continue
        job = await client.job(summary.id)
        if [im.filename for im in job.images] == batch.filenames:
            return job
    return None


async def drop_unknown_jobs(client: AsyncClient, manifest: Manifest) -> list[Job]:
    """Read every job of the manifest; forget those the server answers 404 for (their images
    are uploaded again). Returns the jobs that exist."""
    jobs: list[Job] = []
    for job_id in manifest.state.job_ids:
        try:
            jobs.append(await client.job(job_id))
        except NotFound:
            log.warning("job %s is unknown to the server; its images are uploaded again", job_id)
            manifest.record_forgotten(job_id)
    return jobs
