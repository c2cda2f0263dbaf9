"""The whole service on an S3 blob store: a real moto server on loopback, real PostgreSQL, Redis,
uvicorn and a Celery worker. Uploads go through the gateway into the bucket, the worker reads
them by key and writes the masks there, the API serves them back; retention (run by the
gateway's periodic loop) deletes old jobs and their objects; a store that is down refuses an
upload with 503 and nothing is recorded."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.harness import Service, running_service
from tests.s3server import MotoServer, moto_server
from tests.service.test_end_to_end import auth, make_pngs

BUCKET = "cellseg-e2e"
PREFIX = "e2e"


@pytest.fixture(scope="module")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, MotoServer]]:
    tmp = tmp_path_factory.mktemp("s3service")
    with moto_server(tmp) as moto:
        moto.create_bucket(BUCKET)
        env = {
            **moto.env,
            "STORAGE_URL": f"s3://{BUCKET}/{PREFIX}",
            "RETENTION_DAYS": "1",
            "RETENTION_INTERVAL_S": "1",
            "ML_MODELS": "unet",
        }
        with running_service(tmp, env) as svc:
            yield svc, moto


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def submit(svc: Service, key: str, files: list[bytes]) -> httpx.Response:
    return httpx.post(
        f"{svc.url}/api/v1/jobs",
        files=[("files", (f"img{i}.png", d, "image/png")) for i, d in enumerate(files)],
        data={"model": "unet"},
        headers=auth(key),
        timeout=60,
    )


def wait_job(svc: Service, key: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        r = httpx.get(f"{svc.url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        body = r.json()
        if r.status_code == 200 and body["status"] not in ("queued", "running"):
            return dict(body)
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not finished: {body}\n{svc.diagnostics()}")


def spool_files(svc: Service) -> list[str]:
    spool = Path(svc.env["UPLOAD_DIR"])
    return sorted(p.name for p in spool.rglob("*")) if spool.exists() else []


def test_a_job_goes_through_the_bucket(s3_service: tuple[Service, MotoServer]) -> None:
    svc, moto = s3_service
    key = svc.create_user("s3-user")
    files = make_pngs(201, 3)
    r = submit(svc, key, files)
    assert r.status_code == 202, r.text
    job = r.json()
    assert {f"{PREFIX}/{sha(d)}" for d in files} <= moto.keys(BUCKET, PREFIX + "/")
    assert spool_files(svc) == []  # nothing local: the worker can only read from S3

    body = wait_job(svc, key, job["id"])
    assert body["status"] == "done", body
    s3 = moto.client()
    for image in job["images"]:
        base = f"{svc.url}/api/v1/jobs/{job['id']}/images/{image['id']}"
        result = httpx.get(f"{base}/result", headers=auth(key), timeout=10)
        assert result.status_code == 200 and "objects" in result.json()
        mask = httpx.get(f"{base}/mask.png", headers=auth(key), timeout=10)
        assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
        labels = cv2.imdecode(np.frombuffer(mask.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (256, 256) and labels.dtype == np.uint16
        row = svc.db("SELECT mask_key, mask_png FROM results WHERE image_id = $1", image["id"])[0]
        assert row["mask_png"] is None and row["mask_key"] == f"masks/{sha(mask.content)}"
        stored = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{row['mask_key']}")["Body"].read()
        assert stored == mask.content


def test_a_missing_upload_fails_that_image_alone(s3_service: tuple[Service, MotoServer]) -> None:
    svc, moto = s3_service
    key = svc.create_user("s3-missing")
    files = make_pngs(202, 2)
    svc.stop("worker")
    try:
        r = submit(svc, key, files)
        assert r.status_code == 202, r.text
        moto.client().delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{sha(files[0])}")
    finally:
        svc.start_worker()
    body = wait_job(svc, key, r.json()["id"])
    by_name = {im["filename"]: im for im in body["images"]}
    assert by_name["img0.png"]["status"] == "failed"
    assert by_name["img0.png"]["error"]["code"] == "upload_missing"
    assert by_name["img1.png"]["status"] == "done"


def test_retention_deletes_old_jobs_and_their_objects(
    s3_service: tuple[Service, MotoServer],
) -> None:
    svc, moto = s3_service
    key = svc.create_user("s3-retention")
    files = make_pngs(203, 2)
    job = submit(svc, key, files).json()
    assert wait_job(svc, key, job["id"])["status"] == "done"
    masks = {
        r["mask_key"]
        for r in svc.db(
            "SELECT r.mask_key FROM results r JOIN images i ON i.id = r.image_id "
            "WHERE i.job_id = $1",
            job["id"],
        )
    }
    objects = {f"{PREFIX}/{sha(d)}" for d in files} | {f"{PREFIX}/{m}" for m in masks}
    assert len(masks) == 2 and objects <= moto.keys(BUCKET)

    svc.db(
        "UPDATE jobs SET created_at = now() - interval '3 days', "
        "finished_at = now() - interval '2 days' WHERE id = $1",
        job["id"],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and svc.db("SELECT 1 FROM jobs WHERE id = $1", job["id"]):
        time.sleep(0.5)
    r = httpx.get(f"{svc.url}/api/v1/jobs/{job['id']}", headers=auth(key), timeout=10)
    assert r.status_code == 404, f"{r.text}\n{svc.diagnostics()}"
    assert not svc.db("SELECT 1 FROM images WHERE job_id = $1", job["id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and objects & moto.keys(BUCKET):
        time.sleep(0.3)
    assert not objects & moto.keys(BUCKET)
    assert "retention: batch 1: deleted 1 job(s)" in svc.log("gateway")


def test_an_upload_the_store_refuses_answers_503_and_records_nothing(
    s3_service: tuple[Service, MotoServer],
) -> None:
    """Runs last: it stops the S3 server (whose state is lost on restart)."""
    svc, moto = s3_service
    key = svc.create_user("s3-down")
    user_id = svc.db("SELECT id FROM users WHERE name = 's3-down'")[0]["id"]
    moto.stop()
    try:
        r = submit(svc, key, make_pngs(204, 2))
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "storage_unavailable" and "STORAGE_URL" in error["message"]
        assert r.headers["retry-after"] == "30"
        assert not svc.db("SELECT 1 FROM jobs WHERE user_id = $1", user_id)
        assert not svc.db("SELECT 1 FROM images WHERE user_id = $1", user_id)
        assert spool_files(svc) == []  # no temp file left
    finally:
        moto.restart()
        moto.create_bucket(BUCKET)
