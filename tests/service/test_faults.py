"""Faults of the real dependencies during a job: the worker stops, Redis restarts, PostgreSQL
restarts. The gateway answers 503 with a clear JSON error meanwhile; nothing is lost, every
image is done within seconds of the restart, and a client that stayed connected gets exactly
one ``job.done`` per job.

These tests stop and restart Redis and PostgreSQL, so they run against servers of their own
(:mod:`tests.private_servers`), never the machine's shared ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.harness import Service, running_service
from tests.private_servers import PrivatePostgres, PrivateRedis, private_servers
from tests.service.test_end_to_end import Listener, auth, make_pngs, submit, wait_job


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Service, PrivateRedis, PrivatePostgres]]:
    tmp = tmp_path_factory.mktemp("faults")
    with private_servers(tmp) as (redis, pg):
        with running_service(tmp, redis_url=redis.url, pg_admin_dsn=pg.admin_dsn) as svc:
            yield svc, redis, pg


def submit_sync(service: Service, key: str, n: int, seed: int) -> str:
    files = [("files", (f"f{i}.png", d, "image/png")) for i, d in enumerate(make_pngs(seed, n))]
    r = httpx.post(
        f"{service.url}/api/v1/jobs",
        files=files,
        data={"model": "cbam_resunet"},
        headers=auth(key),
        timeout=60,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_done_count(service: Service, job_id: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = service.db(
            "SELECT count(*) AS c FROM images WHERE job_id = $1 AND status = 'done'", job_id
        )[0]["c"]
        if done >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} images done\n{service.diagnostics()}")


def assert_all_stored_once(service: Service, job_ids: list[str], n: int) -> None:
    row = service.db(
        "SELECT count(*) AS n, count(DISTINCT r.image_id) AS d FROM results r "
        "JOIN images i ON i.id = r.image_id WHERE i.job_id = ANY($1::uuid[])",
        job_ids,
    )[0]
    assert row["n"] == row["d"] == n


def test_readiness_follows_the_worker(
    faulty: tuple[Service, PrivateRedis, PrivatePostgres],
) -> None:
    service = faulty[0]
    assert httpx.get(f"{service.url}/readyz").status_code == 200
    service.stop("worker")  # graceful: drains, removes its heartbeat
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = httpx.get(f"{service.url}/readyz")
        if r.status_code == 503:
            break
        time.sleep(0.3)
    assert r.status_code == 503
    assert "worker" in r.text.lower()
    assert httpx.get(f"{service.url}/healthz").status_code == 200  # alive, just not ready
    service.start_worker()
    service.wait_ready()


def test_redis_restart_during_a_job(faulty: tuple[Service, PrivateRedis, PrivatePostgres]) -> None:
    service, redis, _ = faulty
    key = service.create_user("redis-victim")
    job_id = submit_sync(service, key, 24, seed=21)
    wait_done_count(service, job_id, 2)
    redis.stop()
    try:
        r = httpx.get(f"{service.url}/readyz", timeout=5)
        assert r.status_code == 503 and "redis" in r.text.lower()
        r = httpx.get(f"{service.url}/api/v1/models", headers=auth(key), timeout=5)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "service_unavailable"
        assert "redis" in r.json()["error"]["message"].lower()
        time.sleep(2)
    finally:
        redis.start()
    service.wait_ready(timeout=120)
    body = wait_job(service, key, job_id, 120)
    assert body["status"] == "done", body["counts"]
    assert_all_stored_once(service, [job_id], 24)


def test_postgres_restart_during_a_job(
    faulty: tuple[Service, PrivateRedis, PrivatePostgres],
) -> None:
    service, _, pg = faulty
    key = service.create_user("pg-victim")
    job_id = submit_sync(service, key, 24, seed=22)
    wait_done_count(service, job_id, 2)
    pg.stop()
    try:
        r = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "service_unavailable" and "postgresql" in error["message"].lower()
        assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 503
        time.sleep(2)
    finally:
        pg.start()
    body = wait_job(service, key, job_id, 120)
    assert body["status"] == "done", body["counts"]
    assert_all_stored_once(service, [job_id], 24)


USERS, IMAGES, ROUNDS = 3, 12, 3
RECOVERY_S = 60.0


def restart_rounds(service: Service, restart: Callable[[], None], name: str) -> list[float]:
    """``ROUNDS`` times: ``USERS`` users submit ``IMAGES`` images each with a socket open,
    the server restarts mid-job; every image must be done within ``RECOVERY_S`` of the
    restart and every connected user must get exactly one ``job.done`` per job. Returns the
    seconds from the restart to the last image done, per round."""
    keys = [service.create_user(f"{name}-{i}") for i in range(USERS)]
    recovered = []
    for round_no in range(ROUNDS):

        async def scenario(round_no: int = round_no) -> tuple[list[str], list[Listener], float]:
            listeners = [Listener() for _ in keys]
            for lst, key in zip(listeners, keys, strict=True):
                await lst.connect(service.url, key)
            async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
                jobs = [
                    str(
                        (
                            await submit(
                                http, key, make_pngs(100 * round_no + i, IMAGES), "cbam_resunet"
                            )
                        )["id"]
                    )
                    for i, key in enumerate(keys)
                ]
                while True:  # restart once a few images are done
                    r = await http.get(f"/api/v1/jobs/{jobs[0]}", headers=auth(keys[0]))
                    if r.status_code == 200 and r.json()["counts"]["done"] >= 2 + round_no:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(restart)
            restarted = time.time()
            for lst, job in zip(listeners, jobs, strict=True):
                await asyncio.wait_for(lst.done[job].wait(), RECOVERY_S + 30)
            await asyncio.sleep(2.0)  # a duplicate job.done would arrive meanwhile
            for lst in listeners:
                await lst.sio.disconnect()
            return jobs, listeners, restarted

        jobs, listeners, restarted = asyncio.run(scenario())
        for lst, job in zip(listeners, jobs, strict=True):
            got = [d for d in lst.of("job.done") if d["job_id"] == job]
            assert len(got) == 1, f"round {round_no}: {len(got)} job.done for {job}"
            assert got[0]["status"] == "done", got
        assert_all_stored_once(service, jobs, USERS * IMAGES)
        last = service.db(
            "SELECT extract(epoch FROM max(finished_at)) AS t, count(*) FILTER "
            "(WHERE status <> 'done') AS left FROM images WHERE job_id = ANY($1::uuid[])",
            jobs,
        )[0]
        assert last["left"] == 0
        took = max(0.0, float(last["t"]) - restarted)
        assert took < RECOVERY_S, f"round {round_no}: last image {took:.0f} s after restart"
        recovered.append(round(took, 1))
    print(f"{name}: last image done {recovered} s after the restart")
    return recovered


@pytest.mark.slow
def test_redis_restarts_without_persistence_lose_nothing_and_announce_once(
    faulty: tuple[Service, PrivateRedis, PrivatePostgres],
) -> None:
    service, redis, _ = faulty
    service.wait_ready()
    restart_rounds(service, lambda: redis.restart(down_s=1.0), "redis")


@pytest.mark.slow
def test_postgres_restarts_lose_nothing_and_announce_once(
    faulty: tuple[Service, PrivateRedis, PrivatePostgres],
) -> None:
    service, _, pg = faulty
    service.wait_ready()
    restart_rounds(service, lambda: pg.restart(down_s=1.0), "postgres")
