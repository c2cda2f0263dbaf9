"""Every bad upload is its own case: status code, error code, and nothing written (no job or
image row, no file left in UPLOAD_DIR, no temp file)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import contracts.storage.files
import contracts.storage.s3
from contracts.requests import MODEL_NAMES
from tests.backend import images
from tests.backend.helpers import (
    MAX_FILES,
    MAX_UPLOAD_MB,
    ApiUser,
    Response,
    SyncDb,
    error_of,
    post_job,
    upload_files,
)

URL = "/api/v1/jobs"


class Nothing:
    """Asserts that a request left no trace: call :meth:`check` after it."""

    def __init__(self, db: SyncDb, user: ApiUser, upload_dir: Path) -> None:
        self.db, self.user, self.upload_dir = db, user, upload_dir
        self.files_before = upload_files(upload_dir)
        self.images_before = db.fetchval("SELECT count(*) FROM images")

    def check(self) -> None:
        assert self.db.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1", self.user.id) == 0
        assert self.db.fetchval("SELECT count(*) FROM images") == self.images_before
        assert upload_files(self.upload_dir) == self.files_before  # no blob, no temp file


@pytest.fixture
def nothing(db: SyncDb, user: ApiUser, upload_dir: Path) -> Iterator[Nothing]:
    tracker = Nothing(db, user, upload_dir)
    yield tracker
    tracker.check()


def refused(response: Response, status: int, code: str) -> str:
    assert error_of(response) == (status, code), response.text
    message: str = response.json()["error"]["message"]
    return message


def multipart(client: TestClient, user: ApiUser, body: bytes, content_type: str | None) -> Response:
    headers = dict(user.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(URL, content=body, headers=headers)


# --- files -------------------------------------------------------------------------------------


def test_empty_file(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    refused(post_job(client, user, [("empty.png", b"")]), 422, "empty_file")


def test_truncated_png(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("cut.png", images.png(40, 40)[:-40])])
    assert "truncated PNG" in refused(r, 422, "invalid_image")


def test_truncated_jpeg(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("cut.jpg", images.jpeg(48, 48)[:-20])])
    assert "truncated JPEG" in refused(r, 422, "invalid_image")


def test_truncated_tiff(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    data = images.tiff(np.ones((64, 64), np.uint8))[:-1000]
    r = post_job(client, user, [("cut.tif", data)])
    assert "truncated TIFF" in refused(r, 422, "invalid_image")


def test_text_file(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("notes.png", b"these are not the pixels you are looking for\n")])
    assert "PNG, JPEG, TIFF" in refused(r, 415, "unsupported_format")


def test_gif(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    refused(post_job(client, user, [("anim.gif", images.gif())]), 415, "unsupported_format")


def test_degenerate_image(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("line.png", images.png_claiming(1, 500))])
    refused(r, 422, "invalid_image")


def test_image_over_max_image_pixels(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("bomb.png", images.png_claiming(50_000, 50_000))])
    message = refused(r, 413, "image_too_large")
    assert "100000000" in message and "MAX_IMAGE_PIXELS" in message


def test_upload_over_max_upload_mb(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    big = images.png() + b"\x00" * (MAX_UPLOAD_MB * 1024 * 1024)
    message = refused(post_job(client, user, [("big.png", big)]), 413, "upload_too_large")
    assert "MAX_UPLOAD_MB" in message


def test_files_together_over_max_upload_mb(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    half = b"\x00" * (MAX_UPLOAD_MB * 1024 * 1024 // 2 + 1024)
    r = post_job(client, user, [("a.png", images.png() + half), ("b.png", images.png() + half)])
    refused(r, 413, "upload_too_large")


def test_upload_over_max_upload_mb_without_content_length(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    """Chunked body: the cap is enforced while streaming, not from the declared length."""
    boundary = "chunky"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
    ).encode() + images.png()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(MAX_UPLOAD_MB * 16 + 2):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        URL,
        content=body(),
        headers={**user.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in r.request.headers
    refused(r, 413, "upload_too_large")


def test_too_many_files(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    files = [(f"{i}.png", images.png()) for i in range(MAX_FILES + 1)]
    r = post_job(client, user, files)
    message = refused(r, 413, "too_many_files")
    assert str(MAX_FILES) in message
    assert r.json()["error"]["index"] == MAX_FILES  # the first file over the limit


def test_third_file_bad_keeps_nothing_of_the_first_two(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    good = [images.png(), images.jpeg()]  # fresh random content: no blob exists yet
    files = [("a.png", good[0]), ("b.jpg", good[1]), ("c.png", b"GIF89a not really")]
    refused(post_job(client, user, files), 415, "unsupported_format")
    for content in good:
        assert hashlib.sha256(content).hexdigest() not in upload_files(nothing.upload_dir)


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [
        (b"just some text, renamed", 415, "unsupported_format"),
        (b"", 422, "empty_file"),
    ],
    ids=["text-renamed-png", "empty"],
)
def test_one_bad_file_among_good_ones_is_named_with_its_position(
    client: TestClient, user: ApiUser, nothing: Nothing, bad: bytes, status: int, code: str
) -> None:
    files = [(f"good-{i}.png", images.png()) for i in range(4)]
    files.insert(2, ("notes.png", bad))
    r = post_job(client, user, files)
    message = refused(r, status, code)
    error = r.json()["error"]
    assert (error["file"], error["index"]) == ("notes.png", 2)
    assert message.startswith("notes.png (file 3): ")


def test_the_file_crossing_the_upload_limit_is_named(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    big = b"II*\x00" + bytes(MAX_UPLOAD_MB * 1024 * 1024)
    files = [("a.png", images.png()), ("b.png", images.png()), ("big.tif", big)]
    r = post_job(client, user, files)
    refused(r, 413, "upload_too_large")
    assert r.json()["error"]["file"] == "big.tif" and r.json()["error"]["index"] == 2


# --- parameters --------------------------------------------------------------------------------


def test_unknown_model(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("a.png", images.png())], model="resnet9000")
    message = refused(r, 422, "unknown_model")
    assert all(name in message for name in MODEL_NAMES)


def test_missing_model(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("a.png", images.png())], model=None)
    refused(r, 422, "unknown_model")


@pytest.mark.parametrize("threshold", ["0.01", "0.99", "abc", "nan", "-1"])
def test_threshold_out_of_range(
    client: TestClient, user: ApiUser, nothing: Nothing, threshold: str
) -> None:
    r = post_job(client, user, [("a.png", images.png())], threshold=threshold)
    assert "0.05" in refused(r, 422, "invalid_threshold")


@pytest.mark.parametrize("min_area", ["-1", "1.5", "abc", "10000001", "20000000", str(2**31)])
def test_invalid_min_area(
    client: TestClient, user: ApiUser, nothing: Nothing, min_area: str
) -> None:
    r = post_job(client, user, [("a.png", images.png())], min_area=min_area)
    refused(r, 422, "invalid_min_area")


@pytest.mark.parametrize("split", ["maybe", "2", "null"])
def test_invalid_split(client: TestClient, user: ApiUser, nothing: Nothing, split: str) -> None:
    r = post_job(client, user, [("a.png", images.png())], split=split)
    assert "split" in refused(r, 422, "invalid_split")


@pytest.mark.parametrize("diameter", ["0", "-5", "4.9", "2001", "abc", "nan", "inf", "Auto!"])
def test_invalid_diameter(
    client: TestClient, user: ApiUser, nothing: Nothing, diameter: str
) -> None:
    r = post_job(client, user, [("a.png", images.png())], diameter=diameter)
    assert "diameter" in refused(r, 422, "invalid_diameter")


def test_diameter_larger_than_the_image(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    files = [("a.png", images.png(24, 32)), ("wide.png", images.png(24, 300))]
    r = post_job(client, user, files, diameter="100")
    message = refused(r, 422, "invalid_diameter")
    assert "diameter" in message and r.json()["error"]["file"] == "a.png"


@pytest.mark.parametrize("field", ["treshold", "minArea", "file"])
def test_unknown_field(client: TestClient, user: ApiUser, nothing: Nothing, field: str) -> None:
    """A misspelt parameter is refused, not silently replaced by its default."""
    r = post_job(client, user, [("a.png", images.png())], **{field: "0.3"})
    message = refused(r, 422, "unknown_field")
    assert field in message and "threshold" in message and "min_area" in message
    assert r.json()["error"]["fields"] == [field]


# --- the multipart body ------------------------------------------------------------------------


def test_malformed_multipart_body(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = multipart(client, user, b"this is not multipart at all", "multipart/form-data; boundary=x")
    refused(r, 400, "invalid_multipart")


def test_multipart_without_boundary(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = multipart(client, user, b"--x\r\n\r\n--x--\r\n", "multipart/form-data")
    assert "boundary" in refused(r, 400, "invalid_multipart")


def test_body_that_is_not_multipart(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = multipart(client, user, b'{"model": "unet"}', "application/json")
    refused(r, 400, "invalid_multipart")


def test_body_without_content_type(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    refused(multipart(client, user, b"", None), 400, "invalid_multipart")


def test_body_cut_before_the_closing_boundary(
    client: TestClient, user: ApiUser, nothing: Nothing
) -> None:
    body = (
        b"--cut\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\nunet\r\n'
        b"--cut\r\n"
        b'Content-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    ) + images.png()
    r = multipart(client, user, body, "multipart/form-data; boundary=cut")
    assert "closing boundary" in refused(r, 400, "invalid_multipart")


def test_part_without_a_name(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    body = b"--n\r\nContent-Type: text/plain\r\n\r\nunet\r\n--n--\r\n"
    r = multipart(client, user, body, "multipart/form-data; boundary=n")
    refused(r, 400, "invalid_multipart")


def test_field_sent_twice(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    body = (
        b"--d\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\nunet\r\n'
        b"--d\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\nhrnet\r\n'
        b"--d--\r\n"
    )
    r = multipart(client, user, body, "multipart/form-data; boundary=d")
    assert "twice" in refused(r, 400, "invalid_multipart")


def test_oversized_text_field(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = post_job(client, user, [("a.png", images.png())], model="u" * 5000)
    refused(r, 400, "invalid_multipart")


def test_missing_files_field(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = client.post(URL, headers=user.headers, data={"model": "unet"}, files={"x": ("", b"")})
    refused(r, 422, "no_files")


def test_files_sent_under_another_name(client: TestClient, user: ApiUser, nothing: Nothing) -> None:
    r = client.post(
        URL, headers=user.headers, data={"model": "unet"}, files={"file": ("a.png", images.png())}
    )
    message = refused(r, 422, "no_files")
    assert "'files'" in message and "file" in message


# --- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer csk_wrong"}], ids=["missing", "wrong"]
)
def test_missing_or_wrong_api_key(
    client: TestClient, user: ApiUser, nothing: Nothing, headers: dict[str, str]
) -> None:
    r = client.post(
        URL, headers=headers, data={"model": "unet"}, files={"files": ("a.png", images.png())}
    )
    refused(r, 401, "unauthorized")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Basic dXNlcjpwdw==", "got the scheme 'Basic'"),
        ("csk_bare", "put 'Bearer ' before the key"),
    ],
    ids=["basic", "bare-key"],
)
def test_an_authorization_header_without_bearer_says_so(
    client: TestClient, user: ApiUser, nothing: Nothing, value: str, words: str
) -> None:
    files = [("files", ("a.png", images.png()))]
    r = client.post(URL, headers={"Authorization": value}, data={"model": "unet"}, files=files)
    message = refused(r, 401, "unauthorized")
    assert "'Bearer <api key>'" in message and words in message


# --- file names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\y.png", "y.png"),
        ("..", "image-1"),
        ("..\\..\\windows\\system32\\x.dll", "x.dll"),
        ("/var/../../root/.ssh/id_rsa", "id_rsa"),
    ],
)
def test_path_tricks_in_file_names(
    client: TestClient, user: ApiUser, db: SyncDb, upload_dir: Path, raw: str, stored: str
) -> None:
    content = images.png()
    before = upload_files(upload_dir)
    r = post_job(client, user, [(raw, content)])
    assert r.status_code == 202, r.text
    assert r.json()["images"][0]["filename"] == stored
    assert db.fetchval("SELECT filename FROM images WHERE user_id = $1", user.id) == stored
    # on disk, only the content's sha256 appears: the user's name is never used
    assert upload_files(upload_dir) - before == {hashlib.sha256(content).hexdigest()}
    assert not (upload_dir.parent / "etc").exists()


def test_control_characters_in_file_names(
    client: TestClient, user: ApiUser, db: SyncDb, upload_dir: Path
) -> None:
    content = images.png()
    before = upload_files(upload_dir)
    body = (
        (
            b"--c\r\n"
            b'Content-Disposition: form-data; name="model"\r\n\r\nunet\r\n'
            b"--c\r\n"
            b'Content-Disposition: form-data; name="files"; filename="../a\x01b\tc\x7f.png"\r\n\r\n'
        )
        + content
        + b"\r\n--c--\r\n"
    )
    r = multipart(client, user, body, "multipart/form-data; boundary=c")
    assert r.status_code == 202, r.text
    assert r.json()["images"][0]["filename"] == "abc.png"
    assert upload_files(upload_dir) - before == {hashlib.sha256(content).hexdigest()}


# --- storage failure after the blobs were placed ---------------------------------------------


def test_storage_failure_at_commit_keeps_nothing_new(
    client: TestClient,
    user: ApiUser,
    other_user: ApiUser,
    db: SyncDb,
    upload_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = images.png()
    assert post_job(client, other_user, [("shared.png", shared)]).status_code == 202
    tracker = Nothing(db, user, upload_dir)
    fresh = images.png()

    def broken_fsync(path: Path) -> None:
        if path.is_dir():  # the blob is renamed into place, then its directory fails
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(contracts.storage.files, "_fsync_path", broken_fsync)
    r = post_job(client, user, [("shared.png", shared), ("fresh.png", fresh)])
    assert "No space left" in refused(r, 503, "storage_unavailable")
    monkeypatch.undo()
    tracker.check()  # the fresh blob was placed, then removed
    assert (upload_dir / hashlib.sha256(shared).hexdigest()).exists()  # another job's: kept
