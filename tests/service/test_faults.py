"""Faults of the real dependencies during a job: the worker stops, Redis restarts, PostgreSQL
restarts. The gateway answers 503 with a clear JSON error meanwhile; nothing is lost."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from scripts.local_services import ensure_postgres, ensure_redis
from tests.harness import Service
from tests.service.test_end_to_end import auth, make_pngs, wait_job


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


def assert_all_stored_once(service: Service, job_id: str, n: int) -> None:
    row = service.db(
        "SELECT count(*) AS n, count(DISTINCT r.image_id) AS d FROM results r "
        "JOIN images i ON i.id = r.image_id WHERE i.job_id = $1",
        job_id,
    )[0]
    assert row["n"] == row["d"] == n


def test_readiness_follows_the_worker(service: Service) -> None:
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


def test_redis_restart_during_a_job(service: Service) -> None:
    key = service.create_user("redis-victim")
    job_id = submit_sync(service, key, 24, seed=21)
    wait_done_count(service, job_id, 2)
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False, timeout=10)
    try:
        r = httpx.get(f"{service.url}/readyz", timeout=5)
        assert r.status_code == 503 and "redis" in r.text.lower()
        r = httpx.get(f"{service.url}/api/v1/models", headers=auth(key), timeout=5)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "service_unavailable"
        assert "redis" in r.json()["error"]["message"].lower()
        time.sleep(2)
    finally:
        ensure_redis()
    service.wait_ready(timeout=120)
    body = wait_job(service, key, job_id, 240)
    assert body["status"] == "done", body["counts"]
    assert_all_stored_once(service, job_id, 24)


def pg_ctl(action: str) -> None:
    for version in sorted(os.listdir("/etc/postgresql")):
        if (Path("/etc/postgresql") / version / "main").is_dir():
            args = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
            if action == "stop":
                args += ["-m", "fast"]
            subprocess.run(args, check=False, timeout=60, capture_output=True)


def test_postgres_restart_during_a_job(service: Service) -> None:
    key = service.create_user("pg-victim")
    job_id = submit_sync(service, key, 24, seed=22)
    wait_done_count(service, job_id, 2)
    pg_ctl("stop")
    try:
        r = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "service_unavailable" and "postgresql" in error["message"].lower()
        assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 503
        time.sleep(2)
    finally:
        pg_ctl("start")
        ensure_postgres()
    body = wait_job(service, key, job_id, 240)
    assert body["status"] == "done", body["counts"]
    assert_all_stored_once(service, job_id, 24)
