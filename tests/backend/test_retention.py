"""Retention (backend/retention.py) against real PostgreSQL and both blob stores (the file store
of the session's app and S3 on a real moto server). Old jobs are made by moving their
timestamps back in the database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import boto3
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient

from backend.retention import RETENTION_LOCK, RetentionLoop, RetentionReport, purge_expired
from contracts.db.pool import init_connection
from contracts.settings import Settings
from contracts.storage import BlobStore, S3Store, StorageUnavailable, mask_key, upload_key
from tests.backend import images
from tests.backend.helpers import ApiUser, SyncDb, new_user, post_job, set_status
from tests.backend.s3app import s3_gateway
from tests.harness import free_port
from tests.s3server import MotoServer, moto_server

T = TypeVar("T")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@dataclass
class Case:
    client: TestClient
    store: BlobStore


@pytest.fixture(scope="module")
def s3_case(
    settings: Settings, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Case]:
    with s3_gateway(settings, moto, tmp_path_factory.mktemp("spool")) as gateway:
        yield Case(gateway.client, gateway.store)


@pytest.fixture(params=["file", "s3"])
def case(request: pytest.FixtureRequest, client: TestClient) -> Case:
    if request.param == "file":
        return Case(client, client.app.state.store)  # type: ignore[attr-defined]
    s3: Case = request.getfixturevalue("s3_case")
    return s3


def with_pool(dsn: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def go() -> T:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=init_connection)
        assert pool is not None
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def purge(dsn: str, store: BlobStore, **kwargs: Any) -> RetentionReport:
    kwargs.setdefault("retention_days", 1)
    return with_pool(dsn, lambda pool: purge_expired(pool, store, **kwargs))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_job(case: Case, user: ApiUser, files: list[bytes]) -> dict[str, Any]:
    r = post_job(case.client, user, [(f"f{i}.png", f) for i, f in enumerate(files)])
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def finish(db: SyncDb, store: BlobStore, image_id: str, mask: bytes) -> str:
    """What a worker does: the mask into the store, the result row with its key, done."""
    key = mask_key(sha(mask))
    store.put_bytes(key, mask)
    db.execute(
        "INSERT INTO results (image_id, objects, result, geojson, coco, mask_key) "
        "VALUES ($1, 1, $2::jsonb, '{}'::jsonb, '{}'::jsonb, $3)",
        uuid.UUID(image_id),
        json.dumps({"objects": []}),
        key,
    )
    db.execute(
        "UPDATE images SET status = 'done', finished_at = now() WHERE id = $1", uuid.UUID(image_id)
    )
    return key


def age(db: SyncDb, job_id: str, days: float, *, job_finished: bool = True) -> None:
    """Move a job back in time: created ``days + 1`` ago, finished ``days`` ago."""
    jid = uuid.UUID(job_id)
    db.execute(
        "UPDATE jobs SET created_at = now() - make_interval(days => $2 + 1), "
        "finished_at = CASE WHEN $3 THEN now() - make_interval(days => $2) END WHERE id = $1",
        jid,
        int(days),
        job_finished,
    )
    db.execute(
        "UPDATE images SET created_at = now() - make_interval(days => $2 + 1), "
        "finished_at = CASE WHEN finished_at IS NULL THEN NULL "
        "ELSE now() - make_interval(days => $2) END WHERE job_id = $1",
        jid,
        int(days),
    )


def job_exists(db: SyncDb, job_id: str) -> bool:
    return bool(db.fetchval("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)", uuid.UUID(job_id)))


def unique_mask(seed: int) -> bytes:
    """Mask bytes no other row has (the store does not look inside)."""
    return f"mask-{seed}-".encode() + secrets.token_bytes(16)


def test_retention_deletes_old_finished_jobs_their_rows_and_unshared_blobs(
    case: Case, db: SyncDb, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    purge(database_url, case.store)  # start from no expired job
    user = new_user(case.client, "ret")
    shared, own_a, own_b, own_c = (images.png() for _ in range(4))
    shared_mask, mask_a = unique_mask(1), unique_mask(2)

    old_done = new_job(case, user, [shared, own_a])  # done 3 days ago
    key_shared = finish(db, case.store, old_done["images"][0]["id"], shared_mask)
    key_a = finish(db, case.store, old_done["images"][1]["id"], mask_a)
    age(db, old_done["id"], 3)

    old_failed = new_job(case, user, [own_b])  # failed long ago; job.done never recorded
    set_status(db, old_failed["images"][0]["id"], "failed", "invalid_image", "bad")
    db.execute(
        "UPDATE images SET finished_at = now() WHERE id = $1",
        uuid.UUID(old_failed["images"][0]["id"]),
    )
    age(db, old_failed["id"], 5, job_finished=False)

    old_active = new_job(case, user, [own_c, own_a])  # old, but one image still queued
    finish(db, case.store, old_active["images"][1]["id"], unique_mask(3))
    age(db, old_active["id"], 9, job_finished=False)

    recent = new_job(case, user, [shared])  # finished now: kept, and keeps what it shares
    finish(db, case.store, recent["images"][0]["id"], shared_mask)

    for data in (shared, own_a, own_b, own_c):
        assert case.store.exists(upload_key(sha(data)))

    with caplog.at_level(logging.INFO, logger="backend.retention"):
        report = purge(database_url, case.store, batch_jobs=1)

    assert (report.jobs, report.batches, report.images, report.results) == (2, 2, 3, 2)
    assert (report.uploads_deleted, report.masks_deleted) == (1, 1)  # own_b; mask_a
    assert not job_exists(db, old_done["id"]) and not job_exists(db, old_failed["id"])
    assert job_exists(db, old_active["id"]) and job_exists(db, recent["id"])
    gone = [uuid.UUID(i["id"]) for i in old_done["images"] + old_failed["images"]]
    assert db.fetchval("SELECT count(*) FROM images WHERE id = ANY($1::uuid[])", gone) == 0
    assert db.fetchval("SELECT count(*) FROM results WHERE image_id = ANY($1::uuid[])", gone) == 0
    assert db.fetchval("SELECT count(*) FROM blob_deletions") == 0

    assert not case.store.exists(upload_key(sha(own_b)))
    assert case.store.exists(upload_key(sha(own_a)))  # the active job still uses it
    assert case.store.exists(upload_key(sha(shared)))  # the recent job still uses it
    assert case.store.exists(upload_key(sha(own_c)))
    assert not case.store.exists(key_a)
    assert case.store.exists(key_shared)  # the recent result has the same mask
    batches = [r.getMessage() for r in caplog.records if "retention: batch" in r.getMessage()]
    assert len(batches) == 2 and "deleted 1 job(s)" in batches[0], batches

    assert purge(database_url, case.store) == RetentionReport()  # nothing left to do


def test_retention_is_off_at_zero_days(client: TestClient, settings: Settings) -> None:
    with pytest.raises(ValueError, match="keep forever"):
        purge(settings.database_url, client.app.state.store, retention_days=0)  # type: ignore[attr-defined]
    loop = RetentionLoop(settings, None, client.app.state.store)  # type: ignore[arg-type,attr-defined]
    assert asyncio.run(loop.run_once()) is None  # RETENTION_DAYS=0: nothing is touched


def test_one_purge_at_a_time_in_the_service(client: TestClient, settings: Settings) -> None:
    on = settings.model_copy(update={"retention_days": 1})

    async def scenario(pool: asyncpg.Pool) -> tuple[RetentionReport | None, RetentionReport | None]:
        loop = RetentionLoop(on, pool, client.app.state.store)  # type: ignore[attr-defined]
        other = await asyncpg.connect(settings.database_url)
        try:
            await other.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK)
            held = await loop.run_once()  # another replica is purging
            await other.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)
            free = await loop.run_once()
        finally:
            await other.close()
        return held, free

    held, free = with_pool(settings.database_url, scenario)
    assert held is None
    assert isinstance(free, RetentionReport)


def test_a_store_outage_keeps_the_deletions_queued(
    s3_case: Case, moto: MotoServer, db: SyncDb, database_url: str
) -> None:
    purge(database_url, s3_case.store)
    user = new_user(s3_case.client, "ret-outage")
    data, mask = images.png(), unique_mask(4)
    job = new_job(s3_case, user, [data])
    key = finish(db, s3_case.store, job["images"][0]["id"], mask)
    age(db, job["id"], 2)
    assert isinstance(s3_case.store, S3Store)
    dead = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    down = S3Store(s3_case.store.bucket, s3_case.store.prefix, dead)
    with pytest.raises(StorageUnavailable, match="cannot delete"):
        purge(database_url, down)
    dead.close()
    assert not job_exists(db, job["id"])  # rows first: no row refers to a deleted object
    queued = {r["key"] for r in db.fetch("SELECT key FROM blob_deletions")}
    assert queued == {upload_key(sha(data)), key}
    assert s3_case.store.exists(key) and s3_case.store.exists(upload_key(sha(data)))

    report = purge(database_url, s3_case.store)  # the store is back: the queue drains
    assert (report.jobs, report.uploads_deleted, report.masks_deleted) == (0, 1, 1)
    assert not s3_case.store.exists(key) and not s3_case.store.exists(upload_key(sha(data)))
    assert db.fetchval("SELECT count(*) FROM blob_deletions") == 0


def test_a_blob_written_again_while_queued_is_kept(
    case: Case, db: SyncDb, database_url: str
) -> None:
    """A deletion queued by a run that crashed, for an upload a new job uses again meanwhile:
    the object stays and the key is forgotten."""
    purge(database_url, case.store)
    user = new_user(case.client, "ret-reuse")
    data = images.png()
    new_job(case, user, [data])
    orphan = mask_key(sha(b"orphan" + secrets.token_bytes(8)))
    case.store.put_bytes(orphan, b"orphan")
    db.execute(
        "INSERT INTO blob_deletions (key, kind) VALUES ($1, 'upload'), ($2, 'mask')",
        upload_key(sha(data)),
        orphan,
    )
    report = purge(database_url, case.store)
    assert (report.uploads_deleted, report.masks_deleted) == (0, 1)
    assert case.store.exists(upload_key(sha(data)))
    assert not case.store.exists(orphan)
    assert db.fetchval("SELECT count(*) FROM blob_deletions") == 0
