"""Stacks at the gateway: a z-stack or a channel-first TIFF is taken at the plane/channel the
request names, or refused before anything is stored with a 422 that says what the file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.backend import images
from tests.backend.helpers import ApiUser, SyncDb, error_of, post_job, upload_files

Z_STACK = images.tiff(
    np.random.default_rng(1).integers(0, 4000, (5, 40, 30), dtype=np.uint16),
    imagej=True,
    metadata={"axes": "ZYX"},
)
CHANNEL_FIRST = images.tiff(
    np.random.default_rng(2).integers(0, 255, (3, 40, 30), dtype=np.uint8),
    imagej=True,
    metadata={"axes": "CYX"},
)


@pytest.fixture
def nothing_kept(db: SyncDb, user: ApiUser, upload_dir: Path):  # type: ignore[no-untyped-def]
    files, jobs = upload_files(upload_dir), db.fetchval("SELECT count(*) FROM jobs")
    yield
    assert upload_files(upload_dir) == files
    assert db.fetchval("SELECT count(*) FROM jobs") == jobs


@pytest.mark.parametrize(
    ("data", "fields", "words"),
    [
        (Z_STACK, {}, "stack.tif (file 2) holds 5 planes of 30×40; choose one with plane=0..4"),
        (Z_STACK, {"plane": 5}, "plane=5 is not one of them (0..4)"),
        (CHANNEL_FIRST, {}, "holds 3 channels of 30×40; choose one with channel=0..2"),
        (CHANNEL_FIRST, {"channel": 3}, "channel=3 is not one of them (0..2)"),
    ],
    ids=["z-stack", "plane-out-of-range", "channel-first", "channel-out-of-range"],
)
def test_a_stack_without_a_valid_choice_is_refused_saying_what_it_holds(
    client: TestClient,
    user: ApiUser,
    nothing_kept: None,
    data: bytes,
    fields: dict[str, int],
    words: str,
) -> None:
    files = [("grey.tif", images.tiff()), ("stack.tif", data)]
    r = post_job(client, user, files, **fields)
    assert error_of(r) == (422, "choose_plane_or_channel")
    error = r.json()["error"]
    assert words in error["message"], error["message"]
    assert (error["file"], error["index"]) == ("stack.tif", 1)


def test_a_named_plane_or_channel_is_accepted_and_kept_with_the_job(
    client: TestClient, user: ApiUser
) -> None:
    r = post_job(client, user, [("stack.tif", Z_STACK)], plane=3)
    assert r.status_code == 202, r.text
    assert (r.json()["plane"], r.json()["channel"]) == (3, None)
    job = client.get(f"/api/v1/jobs/{r.json()['id']}", headers=user.headers).json()
    assert (job["plane"], job["channel"]) == (3, None)
    r = post_job(
        client, user, [("channels.tif", CHANNEL_FIRST), ("b.tif", images.tiff())], channel=1
    )
    assert r.status_code == 202, r.text  # the grey TIFF has no channels: the choice skips it


@pytest.mark.parametrize(("field", "value"), [("plane", "-1"), ("channel", "x")])
def test_a_malformed_plane_or_channel_is_a_422_naming_it(
    client: TestClient, user: ApiUser, field: str, value: str
) -> None:
    r = post_job(client, user, [("a.png", images.png())], **{field: value})
    assert error_of(r) == (422, f"invalid_{field}")
