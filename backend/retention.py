"""Retention: delete finished jobs older than ``RETENTION_DAYS``, their rows and their blobs.

A job is expired when every image is terminal (done, failed or cancelled) and it finished
(``jobs.finished_at``, else its last image's ``finished_at``) more than ``RETENTION_DAYS`` ago.
:func:`purge_expired` works in batches of ``RETENTION_BATCH_JOBS`` jobs, each in two steps:

1. one transaction deletes the jobs (images and results by cascade) and queues their upload
   and mask keys in ``blob_deletions``;
2. :func:`delete_queued_blobs` then takes the queued keys in chunks, each chunk in a transaction
   holding the blobs' advisory locks (:func:`contracts.db.repo.lock_blobs`, as uploads and
   workers do when they store one), deletes the objects no remaining row refers to (an upload
   or a mask may be shared by several jobs: content addressed) and forgets the keys.

Rows go before objects, so no row ever refers to a deleted object; a crash or a store outage
between the two leaves the keys queued for the next run. Each batch is logged with its counts.

:class:`RetentionLoop` runs :func:`purge_expired` every ``RETENTION_INTERVAL_S`` in every
gateway replica; a PostgreSQL advisory lock lets one run at a time in the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from contracts.db import repo, work
from contracts.settings import Settings
from contracts.storage import BlobStore, StorageError

log = logging.getLogger(__name__)

RETENTION_LOCK = 0x43535254  # "CSRT": pg_try_advisory_lock key of the running purge
BLOB_CHUNK = 500
"""Blob keys per deletion transaction (one advisory lock each)."""


@dataclass
class RetentionReport:
    """What one :func:`purge_expired` call deleted."""

    batches: int = 0
    jobs: int = 0
    images: int = 0
    results: int = 0
    uploads_deleted: int = 0
    masks_deleted: int = 0

    def add_blobs(self, uploads: int, masks: int) -> None:
        self.uploads_deleted += uploads
        self.masks_deleted += masks


async def purge_expired(
    pool: asyncpg.Pool,
    store: BlobStore,
    *,
    retention_days: float,
    batch_jobs: int = 500,
    blob_chunk: int = BLOB_CHUNK,
) -> RetentionReport:
    """Delete every expired job and then its unreferenced blobs (see the module docstring).

    Args:
        pool: the gateway's pool.
        store: the blob store of uploads and masks.
        retention_days: age, after finishing, at which a job expires (> 0).
        batch_jobs: jobs deleted per transaction.
        blob_chunk: blob keys checked and deleted per transaction.

    Raises:
        ValueError: ``retention_days`` is not positive.
        StorageUnavailable, asyncpg errors: the store or PostgreSQL failed; what was done
            stays done, the rest is picked up by the next call.
    """
    if retention_days <= 0:
        raise ValueError("retention_days must be > 0 (0 means keep forever: do not purge)")
    older_than_s = retention_days * 86_400.0
    report = RetentionReport()
    uploads, masks = await delete_queued_blobs(pool, store, chunk=blob_chunk)  # left by a crash
    report.add_blobs(uploads, masks)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            ids, images, results = await work.take_expired_jobs(conn, older_than_s, batch_jobs)
        if not ids:
            break
        uploads, masks = await delete_queued_blobs(pool, store, chunk=blob_chunk)
        report.batches += 1
        report.jobs += len(ids)
        report.images += images
        report.results += results
        report.add_blobs(uploads, masks)
        log.info(
            "retention: batch %d: deleted %d job(s) finished over %g day(s) ago "
            "(%d image(s), %d result(s)); %d upload(s) and %d mask(s) deleted from %s",
            report.batches,
            len(ids),
            retention_days,
            images,
            results,
            uploads,
            masks,
            store.url,
        )
        if len(ids) < batch_jobs:
            break
    return report


async def delete_queued_blobs(
    pool: asyncpg.Pool, store: BlobStore, *, chunk: int = BLOB_CHUNK
) -> tuple[int, int]:
    """Delete the objects queued in ``blob_deletions`` that no row refers to any more, and
    forget every key handled. Returns ``(uploads, masks)`` deleted from the store."""
    uploads = masks = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            pending = await work.pending_blob_deletions(conn, chunk)
            if not pending:
                break
            keys = [r["key"] for r in pending]
            await repo.lock_blobs(conn, keys)
            referenced = await work.referenced_blobs(conn, keys)
            orphans = [r for r in pending if r["key"] not in referenced]
            if orphans:
                await asyncio.to_thread(store.delete, [r["key"] for r in orphans])
            await work.forget_blob_deletions(conn, keys)
        uploads += sum(1 for r in orphans if r["kind"] == "upload")
        masks += sum(1 for r in orphans if r["kind"] == "mask")
        if len(pending) < chunk:
            break
    return uploads, masks


class RetentionLoop:
    """Runs :func:`purge_expired` every ``RETENTION_INTERVAL_S`` (the first run at start-up)
    while ``RETENTION_DAYS`` > 0; one replica at a time purges (advisory lock)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, store: BlobStore) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.runs = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except (OSError, StorageError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "retention: %s; retrying in %g s", exc, self.settings.retention_interval_s
                )
            except Exception:  # the loop must outlive any single failure
                log.exception("retention: unexpected error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.retention_interval_s)

    async def run_once(self) -> RetentionReport | None:
        """Purge now if this replica gets the lock; None when another replica holds it or
        retention is off."""
        if self.settings.retention_days <= 0:
            return None
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
                return None
            try:
                report = await purge_expired(
                    self.pool,
                    self.store,
                    retention_days=self.settings.retention_days,
                    batch_jobs=self.settings.retention_batch_jobs,
                )
            finally:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)
        self.runs += 1
        if report.jobs or report.uploads_deleted or report.masks_deleted:
            log.info(
                "retention: deleted %d job(s), %d image(s), %d result(s), %d upload(s), "
                "%d mask(s) in %d batch(es)",
                report.jobs,
                report.images,
                report.results,
                report.uploads_deleted,
                report.masks_deleted,
                report.batches,
            )
        return report

    def stop(self) -> None:
        self._stopping.set()
