"""``work.job_progress``: a job's counts, its place in the queue and the service's rate, in one
query, against a database of its own (other tests' images would move the counts)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from contracts.db import work
from tests.backend.helpers import migrated_database


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_database() as url:
        yield url


async def _job(conn: asyncpg.Connection, user: int, statuses: list[str], age_s: float) -> str:
    job = uuid.uuid4()
    await conn.execute(
        "INSERT INTO jobs (id, user_id, model, threshold, min_area, total) "
        "VALUES ($1, $2, 'unet', 0.5, 0, $3)",
        job,
        user,
        len(statuses),
    )
    for seq, status in enumerate(statuses):
        await conn.execute(
            "INSERT INTO images (id, job_id, user_id, seq, filename, sha256, size_bytes, width, "
            "height, status, created_at, started_at, finished_at) VALUES ($1, $2, $3, $4, 'a.png', "
            "'x', 1, 1, 1, $5, now() - make_interval(secs => $6), "
            "CASE WHEN $5 IN ('done', 'failed', 'processing') "
            "THEN now() - make_interval(secs => $6) END, "
            "CASE WHEN $5 IN ('done', 'failed') THEN now() END)",
            uuid.uuid4(),
            job,
            user,
            seq,
            status,
            age_s,
        )
    return str(job)


def test_counts_position_and_rate_in_one_query(dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            user = await conn.fetchval(
                "INSERT INTO users (name, api_key_hash) VALUES ('u', 'h') RETURNING id"
            )
            # older work of another job: 2 waiting or running ahead, 3 finished in the last minute
            await _job(conn, user, ["queued", "processing", "done", "done", "failed"], 30)
            mine = await _job(conn, user, ["done", "queued", "dispatched"], 10)
            later = await _job(conn, user, ["queued"], 1)  # behind mine: not ahead of it
            finished = await _job(conn, user, ["done", "cancelled"], 5)

            p = await work.job_progress(pool, mine)
            assert p.counts == {"done": 1, "queued": 1, "dispatched": 1} and p.total == 3
            assert p.position == 2
            assert p.recent == 5  # 3 of the old job, 1 of mine, 1 finished
            assert p.recent_span_s == pytest.approx(30, abs=5)  # from the oldest one's start
            assert p.job_elapsed_s == pytest.approx(10, abs=5)  # from mine's first start
            assert (await work.job_counts(pool, mine)) == (p.counts, p.total)

            assert (await work.job_progress(pool, later)).position == 4  # old job's 2, mine's 2

            p = await work.job_progress(pool, finished)
            assert p.counts == {"done": 1, "cancelled": 1} and p.total == 2
            assert p.position is None  # nothing waiting

            p = await work.job_progress(pool, str(uuid.uuid4()))
            assert p.counts == {} and p.total == 0 and p.position is None
            assert p.job_elapsed_s is None
        finally:
            await pool.close()
            await conn.close()

    asyncio.run(go())


def test_progress_reads_indexes_not_every_retained_image(dsn: str) -> None:
    """Run once per finished image: with many images retained, its service-wide counts must
    come from indexes (migration 003), not from scanning the table."""

    async def go() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            user = await conn.fetchval(
                "INSERT INTO users (name, api_key_hash) VALUES ('u', 'h') RETURNING id"
            )
            for _ in range(20):  # 2000 finished images of earlier jobs
                await _job(conn, user, ["done"] * 100, 3600)
            mine = await _job(conn, user, ["done", "queued"], 10)
            await conn.execute("ANALYZE images")
            await conn.execute("SET enable_seqscan = off")  # a scan only where no index serves
            rows = await conn.fetch("EXPLAIN " + work.JOB_PROGRESS_SQL, uuid.UUID(mine))
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    plan = asyncio.run(go())
    assert "Seq Scan on images" not in plan, plan
    assert "images_finished" in plan and "images_waiting" in plan, plan
