"""Results API: per-image results and masks, job-level JSON/GeoJSON/COCO (results rows are
inserted directly, as a worker would)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.exports import ImagePayload, geojson_files
from tests.backend import images
from tests.backend.helpers import ApiUser, SyncDb, error_of, post_job, set_status, store_result


def create(client: TestClient, user: ApiUser, n: int) -> dict[str, Any]:
    r = post_job(client, user, [(f"img{i}.png", images.png()) for i in range(n)])
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def result_url(job: dict[str, Any], k: int, tail: str = "result") -> str:
    return f"/api/v1/jobs/{job['id']}/images/{job['images'][k]['id']}/{tail}"


@pytest.mark.parametrize("status", ["queued", "dispatched", "processing", "cancelled"])
def test_result_not_ready(client: TestClient, user: ApiUser, db: SyncDb, status: str) -> None:
    job = create(client, user, 1)
    set_status(db, job["images"][0]["id"], status)
    for tail in ("result", "mask.png"):
        r = client.get(result_url(job, 0, tail), headers=user.headers)
        assert error_of(r) == (409, "not_ready")
        assert r.json()["error"]["status"] == status
        # pending: the same request succeeds later; cancelled: never
        assert r.json()["error"]["retryable"] is (status != "cancelled")


def test_result_of_a_failed_image(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, 1)
    set_status(db, job["images"][0]["id"], "failed", "invalid_image", "degenerate image")
    r = client.get(result_url(job, 0), headers=user.headers)
    assert error_of(r) == (409, "not_ready")
    err = r.json()["error"]
    assert err["status"] == "failed"
    assert err["retryable"] is False
    assert err["image_error"] == {
        "code": "invalid_image",
        "message": "degenerate image",
        "retryable": False,
    }
    assert "degenerate image" in err["message"]


def test_result_of_a_done_image(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, 2)
    store_result(db, job["images"][1]["id"], objects=2, seq=1)

    r = client.get(result_url(job, 1), headers=user.headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"width": 32, "height": 24, "model": "unet", "count": 2, "objects": []}

    r = client.get(result_url(job, 1) + "?format=geojson", headers=user.headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    assert [f["id"] for f in r.json()["features"]] == ["1", "2"]

    r = client.get(result_url(job, 1) + "?format=coco", headers=user.headers)
    coco = r.json()
    assert [im["id"] for im in coco["images"]] == [2]  # seq + 1
    assert coco["images"][0]["file_name"] == "img1.png"
    assert [a["image_id"] for a in coco["annotations"]] == [2, 2]

    r = client.get(result_url(job, 1, "mask.png"), headers=user.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content == images.mask_png()


def test_result_format_must_be_known(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, 1)
    store_result(db, job["images"][0]["id"])
    r = client.get(result_url(job, 0) + "?format=xml", headers=user.headers)
    assert error_of(r) == (422, "invalid_format")
    r = client.get(f"/api/v1/jobs/{job['id']}/results?format=csv", headers=user.headers)
    assert error_of(r) == (422, "invalid_format")


def test_job_results_wait_for_the_job(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, 2)
    store_result(db, job["images"][0]["id"])
    r = client.get(f"/api/v1/jobs/{job['id']}/results", headers=user.headers)
    assert error_of(r) == (409, "not_ready")
    assert r.json()["error"]["status"] == "running"
    assert r.json()["error"]["counts"]["done"] == 1
    assert r.json()["error"]["retryable"] is True


def test_job_results_merge(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    job = create(client, user, 3)
    ids = [im["id"] for im in job["images"]]
    store_result(db, ids[0], objects=2, seq=0)
    set_status(db, ids[1], "failed", "invalid_image", "corrupt")
    store_result(db, ids[2], objects=3, seq=2)
    base = f"/api/v1/jobs/{job['id']}/results"

    body = client.get(base, headers=user.headers).json()
    assert (body["job_id"], body["status"], body["model"]) == (job["id"], "partial", "unet")
    assert [im["image_id"] for im in body["images"]] == ids
    assert [im["filename"] for im in body["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert [im["status"] for im in body["images"]] == ["done", "failed", "done"]
    assert body["images"][0]["result"]["count"] == 2
    assert body["images"][1]["result"] is None
    assert body["images"][1]["error"] == {
        "code": "invalid_image",
        "message": "corrupt",
        "retryable": False,
    }

    r = client.get(base + "?format=geojson", headers=user.headers)
    assert r.headers["content-type"].startswith("application/geo+json")
    features = r.json()["features"]
    assert [f["properties"]["image_id"] for f in features] == [ids[0]] * 2 + [ids[2]] * 3
    assert {f["properties"]["filename"] for f in features} == {"img0.png", "img2.png"}
    assert len({f["id"] for f in features}) == 5

    coco = client.get(base + "?format=coco", headers=user.headers).json()
    assert [(im["id"], im["file_name"]) for im in coco["images"]] == [
        (1, "img0.png"),
        (3, "img2.png"),
    ]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4, 5]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 3, 3, 3]
    assert [c["id"] for c in coco["categories"]] == [1]


def test_job_geojson_zip_holds_one_feature_collection_per_image(
    client: TestClient, user: ApiUser, db: SyncDb
) -> None:
    job = create(client, user, 3)
    ids = [im["id"] for im in job["images"]]
    base = f"/api/v1/jobs/{job['id']}/geojson.zip"
    assert error_of(client.get(base, headers=user.headers)) == (409, "not_ready")
    store_result(db, ids[0], objects=2, seq=0)
    set_status(db, ids[1], "failed", "invalid_image", "corrupt")
    store_result(db, ids[2], objects=3, seq=2)
    r = client.get(base, headers=user.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert archive.namelist() == ["img0.geojson", "img2.geojson"]
        docs = [json.loads(archive.read(name)) for name in archive.namelist()]
    assert [d["type"] for d in docs] == ["FeatureCollection"] * 2
    assert [len(d["features"]) for d in docs] == [2, 3]
    assert {f["properties"]["image_id"] for f in docs[1]["features"]} == {ids[2]}
    assert (
        error_of(client.get("/api/v1/jobs/" + "0" * 32 + "/geojson.zip", headers=user.headers))[0]
        == 404
    )


def test_geojson_files_keep_repeated_names_apart() -> None:
    items = [
        ImagePayload("a", 0, "x.tif", {"features": []}),
        ImagePayload("b", 1, "x.tif", {"features": []}),
        ImagePayload("c", 2, "noext", {"features": []}),
    ]
    assert list(geojson_files(items)) == ["x.geojson", "x-2.geojson", "noext.geojson"]
