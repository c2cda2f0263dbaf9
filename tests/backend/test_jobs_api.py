"""Jobs API against the real PostgreSQL: create, list, read, cancel, ownership."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.uploads import TEMP_PREFIX
from tests.backend import images
from tests.backend.helpers import ApiUser, SyncDb, error_of, post_job, set_status, store_result


def create(client: TestClient, user: ApiUser, n: int = 1, **fields: Any) -> dict[str, Any]:
    r = post_job(client, user, [(f"img{i}.png", images.png()) for i in range(n)], **fields)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def hooks(client: TestClient) -> Iterator[dict[str, list[Any]]]:
    """Record the app's on_job_created / on_job_finished calls during one test."""
    calls: dict[str, list[Any]] = {"created": [], "cancelled": [], "finished": []}
    state = client.app.state  # type: ignore[attr-defined]

    async def finished(job_id: uuid.UUID) -> None:  # async hooks are awaited
        calls["finished"].append(job_id)

    def cancelled(job_id: uuid.UUID, image_ids: list[uuid.UUID]) -> None:
        calls["cancelled"].append((job_id, sorted(map(str, image_ids))))

    state.on_job_created = calls["created"].append  # sync hooks are called
    state.on_images_cancelled = cancelled
    state.on_job_finished = finished
    yield calls
    state.on_job_created = state.on_images_cancelled = state.on_job_finished = None


# --- create ------------------------------------------------------------------------------------


def test_create_job(client: TestClient, user: ApiUser, db: SyncDb, upload_dir: Path) -> None:
    files = [("a.png", images.png()), ("b.jpg", images.jpeg()), ("c.tif", images.tiff())]
    r = post_job(client, user, files, model="hrnet", threshold=0.3, min_area=7)
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {
        "id", "status", "model", "threshold", "min_area", "plane", "channel", "split",
        "diameter", "images", "created_at",
    }  # fmt: skip
    assert body["status"] == "queued"
    assert (body["model"], body["threshold"], body["min_area"]) == ("hrnet", 0.3, 7)
    assert [im["filename"] for im in body["images"]] == ["a.png", "b.jpg", "c.tif"]
    assert all(im["status"] == "queued" for im in body["images"])

    job = db.fetch("SELECT * FROM jobs WHERE id = $1", uuid.UUID(body["id"]))[0]
    assert (job["user_id"], job["model"], job["total"], job["finished_at"]) == (
        user.id, "hrnet", 3, None,
    )  # fmt: skip
    rows = db.fetch("SELECT * FROM images WHERE job_id = $1 ORDER BY seq", job["id"])
    assert [str(r["id"]) for r in rows] == [im["id"] for im in body["images"]]
    for row, (name, content) in zip(rows, files, strict=True):
        sha = hashlib.sha256(content).hexdigest()
        assert (row["status"], row["filename"], row["sha256"]) == ("queued", name, sha)
        assert (row["size_bytes"], row["width"], row["height"]) == (len(content), 32, 24)
        assert row["user_id"] == user.id
        assert (upload_dir / sha).read_bytes() == content  # stored under its sha256
        assert (upload_dir / sha).stat().st_mode & 0o777 == 0o644  # readable by workers
    assert not [n for n in (p.name for p in upload_dir.iterdir()) if n.startswith(TEMP_PREFIX)]


def test_create_job_defaults(client: TestClient, user: ApiUser) -> None:
    body = create(client, user)
    assert (body["threshold"], body["min_area"]) == (0.5, 50)
    assert (body["split"], body["diameter"]) == (True, None)


@pytest.mark.parametrize(
    ("fields", "split", "diameter", "columns"),
    [
        ({"split": "false", "diameter": "30"}, False, 30.0, (False, 30.0, False)),
        ({"split": "true", "diameter": "auto"}, True, "auto", (True, None, True)),
        ({"diameter": "5"}, True, 5.0, (True, 5.0, False)),
    ],
)
def test_split_and_diameter_are_stored_on_the_job(
    client: TestClient,
    user: ApiUser,
    db: SyncDb,
    fields: dict[str, str],
    split: bool,
    diameter: float | str,
    columns: tuple[bool, float | None, bool],
) -> None:
    body = create(client, user, **fields)
    assert (body["split"], body["diameter"]) == (split, diameter)
    row = db.fetch(
        "SELECT split, diameter, diameter_auto FROM jobs WHERE id = $1", uuid.UUID(body["id"])
    )[0]
    assert (row["split"], row["diameter"], row["diameter_auto"]) == columns
    listed = client.get(f"/api/v1/jobs/{body['id']}", headers=user.headers).json()
    assert (listed["split"], listed["diameter"]) == (split, diameter)


def test_empty_optional_fields_mean_defaults(client: TestClient, user: ApiUser) -> None:
    body = create(client, user, threshold="", min_area="")
    assert (body["threshold"], body["min_area"]) == (0.5, 50)


def test_threshold_bounds_are_inclusive(client: TestClient, user: ApiUser) -> None:
    assert create(client, user, threshold=0.05)["threshold"] == 0.05
    assert create(client, user, threshold=0.95, min_area=0)["threshold"] == 0.95


def test_same_content_is_stored_once(
    client: TestClient, user: ApiUser, other_user: ApiUser, db: SyncDb, upload_dir: Path
) -> None:
    content = images.png()
    sha = hashlib.sha256(content).hexdigest()
    r1 = post_job(client, user, [("x.png", content), ("again.png", content)])
    r2 = post_job(client, other_user, [("y.png", content)])
    assert (r1.status_code, r2.status_code) == (202, 202)
    assert db.fetchval("SELECT count(*) FROM images WHERE sha256 = $1", sha) == 3
    assert (upload_dir / sha).read_bytes() == content


def test_fields_may_come_after_the_files(client: TestClient, user: ApiUser) -> None:
    boundary = "b0undary"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="files"; filename="late.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + images.png()
        + (
            f"\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="model"\r\n\r\n'
            "cbam_resunet\r\n"
            f"--{boundary}--\r\n"
        ).encode()
    )
    r = client.post(
        "/api/v1/jobs",
        content=body,
        headers={**user.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["model"] == "cbam_resunet"
    assert r.json()["images"][0]["filename"] == "late.png"


def test_hooks_are_called_after_commit(
    client: TestClient, user: ApiUser, hooks: dict[str, list[Any]]
) -> None:
    body = create(client, user)
    assert hooks["created"] == [uuid.UUID(body["id"])]


def test_a_failing_hook_does_not_fail_the_request(client: TestClient, user: ApiUser) -> None:
    def broken(job_id: uuid.UUID) -> None:
        raise RuntimeError("dispatcher is having a bad day")

    client.app.state.on_job_created = broken  # type: ignore[attr-defined]
    try:
        create(client, user)
    finally:
        client.app.state.on_job_created = None  # type: ignore[attr-defined]


# --- list --------------------------------------------------------------------------------------


def test_list_jobs_newest_first_with_pagination(
    client: TestClient, user: ApiUser, other_user: ApiUser
) -> None:
    ids = [create(client, user)["id"] for _ in range(3)]
    create(client, other_user)
    r = client.get("/api/v1/jobs?limit=2", headers=user.headers)
    assert r.status_code == 200
    page1 = r.json()
    assert (page1["total"], page1["limit"], page1["offset"]) == (3, 2, 0)
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = client.get("/api/v1/jobs?limit=2&offset=2", headers=user.headers).json()
    assert [j["id"] for j in page2["items"]] == [ids[0]]
    beyond = client.get("/api/v1/jobs?offset=10", headers=user.headers).json()
    assert (beyond["items"], beyond["total"]) == ([], 3)
    item = page1["items"][0]
    assert item["status"] == "queued"
    assert item["counts"] == {
        "total": 1, "queued": 1, "processing": 0, "done": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip


def test_list_jobs_default_page(client: TestClient, user: ApiUser) -> None:
    body = client.get("/api/v1/jobs", headers=user.headers).json()
    assert body == {"items": [], "total": 0, "limit": 20, "offset": 0}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=abc"])
def test_list_jobs_refuses_bad_paging(client: TestClient, user: ApiUser, query: str) -> None:
    r = client.get(f"/api/v1/jobs?{query}", headers=user.headers)
    assert error_of(r) == (422, "validation_failed")


# --- read --------------------------------------------------------------------------------------


def test_get_job(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, n=4)
    a, b, c, _ = (im["id"] for im in job["images"])
    store_result(db, a, objects=3)
    set_status(db, b, "failed", "invalid_image", "corrupt PNG: CRC mismatch")
    set_status(db, c, "processing")
    r = client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "running"
    assert body["counts"] == {
        "total": 4, "queued": 1, "processing": 1, "done": 1, "failed": 1, "cancelled": 0,
    }  # fmt: skip
    assert body["finished_at"] is None
    ims = body["images"]
    assert [im["status"] for im in ims] == ["done", "failed", "processing", "queued"]
    assert ims[0]["objects"] == 3 and ims[0]["error"] is None
    assert ims[1]["error"] == {
        "code": "invalid_image",
        "message": "corrupt PNG: CRC mismatch",
        "retryable": False,
    }
    assert (ims[2]["objects"], ims[2]["width"], ims[2]["height"]) == (None, 32, 24)


def test_job_status_follows_its_images(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, n=2)
    a, b = (im["id"] for im in job["images"])
    url = f"/api/v1/jobs/{job['id']}"
    set_status(db, a, "dispatched")
    assert client.get(url, headers=user.headers).json()["status"] == "running"
    store_result(db, a)
    set_status(db, b, "failed", "invalid_image", "degenerate")
    assert client.get(url, headers=user.headers).json()["status"] == "partial"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/{job}",
        "/api/v1/jobs/{job}/results",
        "/api/v1/jobs/{job}/images/{image}/result",
        "/api/v1/jobs/{job}/images/{image}/mask.png",
    ],
)
def test_another_users_job_is_not_found(
    client: TestClient, user: ApiUser, other_user: ApiUser, db: SyncDb, path: str
) -> None:
    job = create(client, user)
    store_result(db, job["images"][0]["id"])
    url = path.format(job=job["id"], image=job["images"][0]["id"])
    assert client.get(url, headers=user.headers).status_code == 200
    assert error_of(client.get(url, headers=other_user.headers)) == (404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/not-a-uuid",
        "/api/v1/jobs/12345",
        f"/api/v1/jobs/{uuid.uuid4()}",
        "/api/v1/jobs/not-a-uuid/results",
        f"/api/v1/jobs/{uuid.uuid4()}/images/{uuid.uuid4()}/result",
        f"/api/v1/jobs/{uuid.uuid4()}/images/nope/mask.png",
    ],
)
def test_unknown_or_malformed_ids_are_not_found(
    client: TestClient, user: ApiUser, path: str
) -> None:
    assert error_of(client.get(path, headers=user.headers)) == (404, "not_found")


def test_image_of_another_job_is_not_found(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job1, job2 = create(client, user), create(client, user)
    store_result(db, job2["images"][0]["id"])
    url = f"/api/v1/jobs/{job1['id']}/images/{job2['images'][0]['id']}/result"
    assert error_of(client.get(url, headers=user.headers)) == (404, "not_found")


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_job(
    client: TestClient, user: ApiUser, db: SyncDb, hooks: dict[str, list[Any]]
) -> None:
    job = create(client, user, n=4)
    queued, dispatched, processing, done = (im["id"] for im in job["images"])
    set_status(db, dispatched, "dispatched")
    set_status(db, processing, "processing")
    store_result(db, done)
    url = f"/api/v1/jobs/{job['id']}"

    r = client.delete(url, headers=user.headers)
    assert r.status_code == 200
    assert r.json() == {
        "id": job["id"], "status": "running", "cancelled": 2, "running": 1, "done": 1, "failed": 0,
    }  # fmt: skip
    statuses = {
        str(r["id"]): r["status"]
        for r in db.fetch("SELECT id, status FROM images WHERE job_id = $1", uuid.UUID(job["id"]))
    }
    assert statuses == {
        queued: "cancelled", dispatched: "cancelled", processing: "processing", done: "done",
    }  # fmt: skip
    assert hooks["finished"] == []  # one image still runs
    assert hooks["cancelled"] == [(uuid.UUID(job["id"]), sorted([queued, dispatched]))]

    store_result(db, processing)  # it finishes; the next cancel finds a terminal job
    r = client.delete(url, headers=user.headers)
    assert r.json() == {
        "id": job["id"], "status": "cancelled",
        "cancelled": 2, "running": 0, "done": 2, "failed": 0,
    }  # fmt: skip
    assert hooks["finished"] == [uuid.UUID(job["id"])]
    assert db.fetchval("SELECT finished_at FROM jobs WHERE id = $1", uuid.UUID(job["id"]))

    client.delete(url, headers=user.headers)  # idempotent; job.done guard holds
    assert hooks["finished"] == [uuid.UUID(job["id"])]
    assert len(hooks["cancelled"]) == 1  # nothing more was cancelled
    assert client.get(url, headers=user.headers).json()["status"] == "cancelled"


def test_cancel_a_queued_job_finishes_it(
    client: TestClient, user: ApiUser, hooks: dict[str, list[Any]]
) -> None:
    job = create(client, user, n=2)
    r = client.delete(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.json()["status"] == "cancelled" and r.json()["cancelled"] == 2
    assert hooks["finished"] == [uuid.UUID(job["id"])]
    got = client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert got["finished_at"] is not None and got["counts"]["cancelled"] == 2


def test_cancel_another_users_job_is_not_found(
    client: TestClient, user: ApiUser, other_user: ApiUser, db: SyncDb
) -> None:
    job = create(client, user)
    r = client.delete(f"/api/v1/jobs/{job['id']}", headers=other_user.headers)
    assert error_of(r) == (404, "not_found")
    status = db.fetchval("SELECT status FROM images WHERE job_id = $1", uuid.UUID(job["id"]))
    assert status == "queued"
