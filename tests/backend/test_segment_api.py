"""``POST /api/v1/segment``: a failed image answers with its cause's status, code and
``retryable`` from the outcome table; bad requests are refused before anything is stored.

A stub stands in for the worker: it waits for the request's image and does what the worker's
task does with it (stores the result, or fails it with the code the worker derives from the
engine's error, or cancels it).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.schemas.results import SegmentAnswer
from contracts.outcomes import code_for
from ml_service.errors import EngineClosed, InvalidImage, OutOfMemory, TooManyObjects
from tests.backend import images
from tests.backend.helpers import ApiUser, Response, SyncDb, error_of, upload_files

URL = "/api/v1/segment"
Refused = Callable[[Response, int, str], None]

RESULT = {
    "model": "unet",
    "variant": "small",
    "threshold": 0.5,
    "min_area": 50,
    "tiles": 1,
    "batch_sizes": [1],
    "timings_ms": {"queue": 1.0, "inference": 2.0},
    "width": 32,
    "height": 24,
    "count": 1,
    "objects": [
        {
            "id": 1,
            "polygon": [[1.0, 1.0], [5.0, 1.0], [5.0, 5.0]],
            "holes": [],
            "bbox": [1, 1, 6, 6],
            "centroid": [3.0, 3.0],
            "metrics": {"area": 16.0},
        }
    ],
}


def segment(client: TestClient, user: ApiUser, **fields: str) -> Response:
    data = {"model": "unet", **fields}
    files = [("file", ("cell.png", images.png(), "image/png"))]
    return client.post(URL, headers=user.headers, data=data, files=files)


def waiting_image(db: SyncDb, user: ApiUser, timeout_s: float = 20.0) -> uuid.UUID:
    """The id of the user's queued image, once the request has committed it."""
    stop = threading.Event()
    while not stop.wait(0.05):
        image_id = db.fetchval(
            "SELECT i.id FROM images i JOIN jobs j ON j.id = i.job_id "
            "WHERE j.user_id = $1 AND i.status = 'queued'",
            user.id,
        )
        if image_id is not None:
            return uuid.UUID(str(image_id))
        timeout_s -= 0.05
        if timeout_s <= 0:
            break
    raise AssertionError("the request's image never appeared")


@contextmanager
def worker_stub(db: SyncDb, user: ApiUser, act: Callable[[uuid.UUID], None]) -> Iterator[None]:
    thread = threading.Thread(target=lambda: act(waiting_image(db, user)), daemon=True)
    thread.start()
    yield
    thread.join(30)


def fail(db: SyncDb, code: str, message: str) -> Callable[[uuid.UUID], None]:
    def act(image_id: uuid.UUID) -> None:
        db.execute(
            "UPDATE images SET status = 'failed', finished_at = now(), error_code = $2, "
            "error = $3 WHERE id = $1",
            image_id,
            code,
            message,
        )

    return act


@pytest.mark.parametrize(
    ("error", "status", "retryable"),
    [
        (InvalidImage("corrupt PNG: CRC mismatch"), 422, False),
        (TooManyObjects("70000 objects found"), 422, False),
        (OutOfMemory("does not fit alone"), 503, True),
        (EngineClosed("engine is closed"), 503, True),
    ],
    ids=["invalid-image", "too-many-objects", "out-of-memory", "engine-closed"],
)
def test_failed_image_answers_its_cause(
    client: TestClient, user: ApiUser, db: SyncDb, error: Exception, status: int, retryable: bool
) -> None:
    code = code_for(getattr(error, "code", None))
    with worker_stub(db, user, fail(db, code, str(error))):
        r = segment(client, user)
    assert error_of(r) == (status, code), r.text
    body = r.json()["error"]
    assert body["retryable"] is retryable
    assert body["message"] == str(error)
    assert body["status"] == "failed" and body["job_id"] and body["image_id"]
    if status == 503:
        assert "retry-after" in r.headers


def test_missing_upload_is_a_server_fault(
    client: TestClient, user: ApiUser, db: SyncDb, upload_dir: Path
) -> None:
    """The stub deletes the stored upload, then fails the image as the worker does when the
    blob store no longer has it."""

    def act(image_id: uuid.UUID) -> None:
        sha = db.fetchval("SELECT sha256 FROM images WHERE id = $1", image_id)
        for path in upload_dir.rglob(f"*{sha}*"):
            path.unlink()
        fail(db, "upload_missing", f"the upload {sha} is missing from the blob store")(image_id)

    with worker_stub(db, user, act):
        r = segment(client, user)
    assert error_of(r) == (500, "upload_missing"), r.text
    assert r.json()["error"]["retryable"] is True


def test_unknown_code_is_an_internal_error(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    with worker_stub(db, user, fail(db, "something_new", "it broke")):
        r = segment(client, user)
    assert error_of(r) == (500, "internal_error"), r.text
    assert r.json()["error"]["retryable"] is False


def test_cancelled_image(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    def act(image_id: uuid.UUID) -> None:
        db.execute("UPDATE images SET status = 'cancelled' WHERE id = $1", image_id)

    with worker_stub(db, user, act):
        r = segment(client, user)
    assert error_of(r) == (409, "cancelled"), r.text


def test_done_image_answers_the_result(client: TestClient, user: ApiUser, db: SyncDb) -> None:
    def act(image_id: uuid.UUID) -> None:
        db.execute(
            "INSERT INTO results (image_id, objects, result, geojson, coco, mask_png) "
            "VALUES ($1, 1, $2::jsonb, '{}'::jsonb, '{}'::jsonb, ''::bytea)",
            image_id,
            json.dumps(RESULT),
        )
        db.execute("UPDATE images SET status = 'done', finished_at = now() WHERE id = $1", image_id)

    with worker_stub(db, user, act):
        r = segment(client, user)
    assert r.status_code == 200, r.text
    answer = SegmentAnswer.model_validate(r.json())
    assert answer.count == 1 and answer.objects[0].bbox == [1, 1, 6, 6]


# --- bad requests: refused before anything is stored --------------------------------------------


@pytest.fixture
def refused(
    client: TestClient, user: ApiUser, db: SyncDb, upload_dir: Path
) -> Callable[[Response, int, str], None]:
    """``refused(response, status, code)``: asserts the error and that nothing was stored."""
    before = upload_files(upload_dir)

    def check(r: Response, status: int, code: str) -> None:
        assert error_of(r) == (status, code), r.text
        assert r.json()["error"]["retryable"] is False
        assert db.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1", user.id) == 0
        assert upload_files(upload_dir) == before

    return check


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model": "nope"}, "unknown_model"),
        ({"threshold": "0.99"}, "invalid_threshold"),
        ({"threshold": "nan"}, "invalid_threshold"),
        ({"min_area": "10000001"}, "invalid_min_area"),
        ({"min_area": "-1"}, "invalid_min_area"),
    ],
    ids=["model", "threshold-high", "threshold-nan", "min-area-high", "min-area-negative"],
)
def test_bad_parameters(
    client: TestClient, user: ApiUser, refused: Refused, fields: dict[str, str], code: str
) -> None:
    refused(segment(client, user, **fields), 422, code)


def test_two_files_are_refused(client: TestClient, user: ApiUser, refused: Refused) -> None:
    files = [("file", ("a.png", images.png(), "image/png")), ("file", ("b.png", images.png()))]
    r = client.post(URL, headers=user.headers, data={"model": "unet"}, files=files)
    refused(r, 413, "too_many_files")
    message = r.json()["error"]["message"]
    assert "at most 1 per request" in message and "POST /jobs" in message
    assert "MAX_FILES_PER_JOB" not in message  # not the job limit, which may be larger


def test_no_file(client: TestClient, user: ApiUser, refused: Refused) -> None:
    r = client.post(URL, headers=user.headers, data={"model": "unet"}, files=[("x", ("a", b"1"))])
    refused(r, 422, "no_files")


def test_unreadable_pixels_are_invalid_image(
    client: TestClient, user: ApiUser, refused: Refused
) -> None:
    """The gateway's answer for a pixel type the engine does not read: the engine's code."""
    data = images.png_claiming(8, 8, colour=2, depth=4)
    files = [("file", ("rgb4.png", data, "image/png"))]
    r = client.post(URL, headers=user.headers, data={"model": "unet"}, files=files)
    refused(r, 422, "invalid_image")
