"""The gateway on an S3 blob store (real moto server, real PostgreSQL): uploads land in the
bucket, a store that refuses the write answers 503 and keeps nothing, masks are served from the
store (rows written before masks moved there still serve their bytes)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.settings import Settings
from contracts.storage import mask_key
from tests.backend import images
from tests.backend.helpers import SyncDb, error_of, new_user, post_job, set_status
from tests.backend.s3app import Gateway, s3_gateway
from tests.harness import free_port
from tests.s3server import MotoServer, moto_server


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def s3(
    settings: Settings, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with s3_gateway(settings, moto, tmp_path_factory.mktemp("spool")) as gateway:
        yield gateway


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jobs_of(db: SyncDb, user_id: int) -> int:
    return int(db.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1", user_id))


def test_uploads_go_to_the_bucket(s3: Gateway, moto: MotoServer, db: SyncDb) -> None:
    user = new_user(s3.client, "s3-alice")
    files = [images.png(), images.jpeg()]
    r = post_job(s3.client, user, [("a.png", files[0]), ("b.jpg", files[1])])
    assert r.status_code == 202, r.text
    names = moto.keys(s3.bucket, "svc/")
    assert {f"svc/{sha(f)}" for f in files} <= names
    assert s3.store.get(sha(files[1])) == files[1]
    assert s3.spool_files() == set()  # the spool keeps no temp and no blob
    rows = db.fetch(
        "SELECT sha256 FROM images WHERE job_id = $1 ORDER BY seq", uuid.UUID(r.json()["id"])
    )
    assert [row["sha256"] for row in rows] == [sha(f) for f in files]


def test_the_same_upload_twice_is_one_object(s3: Gateway, moto: MotoServer, db: SyncDb) -> None:
    user = new_user(s3.client, "s3-twice")
    data = images.png()
    before = moto.keys(s3.bucket)
    for _ in range(2):
        assert (
            post_job(s3.client, user, [("same.png", data), ("again.png", data)]).status_code == 202
        )
    assert moto.keys(s3.bucket) - before == {f"svc/{sha(data)}"}
    assert jobs_of(db, user.id) == 2


@pytest.mark.parametrize("why", ["missing bucket", "store down"])
def test_a_store_that_refuses_the_write_answers_503_and_keeps_nothing(
    settings: Settings,
    moto: MotoServer,
    db: SyncDb,
    tmp_path: Path,
    why: str,
) -> None:
    kwargs: dict[str, Any] = (
        {"bucket": "no-such-bucket"}
        if why == "missing bucket"
        else {"env": {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}}
    )
    with s3_gateway(settings, moto, tmp_path / "spool", **kwargs) as gateway:
        user = new_user(gateway.client, "s3-refused")
        r = post_job(gateway.client, user, [("a.png", images.png()), ("b.png", images.png())])
        assert error_of(r) == (503, "storage_unavailable")
        assert "STORAGE_URL" in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "30"
        assert jobs_of(db, user.id) == 0
        assert db.fetchval("SELECT count(*) FROM images WHERE user_id = $1", user.id) == 0
        assert gateway.spool_files() == set()  # no temp file left
    assert "no-such-bucket" not in {b["Name"] for b in moto.client().list_buckets()["Buckets"]}


def done_with_mask(db: SyncDb, image_id: str, key: str | None, png: bytes | None) -> None:
    """Store a result as a worker does (mask in the store: ``key``; or, as rows written
    before masks moved to the store, the bytes in ``mask_png``)."""
    db.execute(
        "INSERT INTO results (image_id, objects, result, geojson, coco, mask_key, mask_png) "
        "VALUES ($1, 1, $2::jsonb, '{}'::jsonb, '{}'::jsonb, $3, $4)",
        uuid.UUID(image_id),
        json.dumps({"objects": []}),
        key,
        png,
    )
    set_status(db, image_id, "done")


def test_masks_are_served_from_the_store(s3: Gateway, moto: MotoServer, db: SyncDb) -> None:
    user = new_user(s3.client, "s3-masks")
    r = post_job(s3.client, user, [("a.png", images.png()), ("b.png", images.png())])
    job = r.json()
    stored, legacy = images.mask_png(24, 32), images.mask_png(12, 16)
    key = mask_key(sha(stored))
    s3.store.put_bytes(key, stored)
    assert f"svc/{key}" in moto.keys(s3.bucket, "svc/masks/")
    done_with_mask(db, job["images"][0]["id"], key, None)
    done_with_mask(db, job["images"][1]["id"], None, legacy)
    url = f"/api/v1/jobs/{job['id']}/images/{{}}/mask.png"

    got = s3.client.get(url.format(job["images"][0]["id"]), headers=user.headers)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content == stored
    got = s3.client.get(url.format(job["images"][1]["id"]), headers=user.headers)
    assert got.status_code == 200 and got.content == legacy

    s3.store.delete([key])
    got = s3.client.get(url.format(job["images"][0]["id"]), headers=user.headers)
    assert error_of(got) == (404, "mask_missing")
