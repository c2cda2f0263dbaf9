"""``Client`` and ``AsyncClient`` against the real service (gateway, worker, PostgreSQL,
Redis on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellseg_client import (
    AsyncClient,
    Client,
    Event,
    GatewayTimeout,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from tests.client.conftest import SMALL_MAX_FILES, User, image_rows, write_pngs
from tests.client.stub import Proxy, ServerThread
from tests.harness import Service


def test_models_and_limits(service: Service, user: User) -> None:
    with Client(service.url, user.key) as client:
        models = {m.name: m for m in client.models()}
        limits = client.limits()
    assert set(models) == {"cbam_resunet", "hrnet", "unet"}
    assert all(m.workers for m in models.values())
    assert limits.max_files_per_job == 100 and limits.max_upload_mb == 50


def test_submit_watch_and_fetch_every_format(service: Service, user: User, tmp_path: Path) -> None:
    paths = write_pngs(tmp_path, 3, seed=11)
    with Client(service.url, user.key) as client:
        sub = client.submit(paths, "unet", threshold=0.4, min_area=30)
        assert len(sub.jobs) == 1 and not sub.rejected
        job_id = sub.jobs[0].id
        events = list(client.watch(job_id))
        assert "socket" in {e.source for e in events}  # live, with REST reads merged in
        done = [e for e in events if e.name == "image.update" and e.data["status"] == "done"]
        assert {e.data["image_id"] for e in done} == {sub.images[p].image_id for p in paths}
        assert [e.name for e in events].count("job.done") == 1 and events[-1].name == "job.done"
        assert events[-1].data["status"] == "done"
        job = client.job(job_id)
        assert job.status == "done" and job.threshold == 0.4 and job.min_area == 30
        whole = client.results(job_id)
        assert [im["status"] for im in whole["images"]] == ["done"] * 3
        image_id = sub.images[paths[0]].image_id
        result = client.image_result(job_id, image_id)
        geojson = client.image_result(job_id, image_id, "geojson")
        coco = client.image_result(job_id, image_id, "coco")
        mask = cv2.imdecode(
            np.frombuffer(client.mask(job_id, image_id), np.uint8), cv2.IMREAD_UNCHANGED
        )
    assert result["count"] == len(geojson["features"]) == len(coco["annotations"])
    assert mask is not None and mask.dtype == np.uint16 and int(mask.max()) == result["count"]


def test_a_bad_file_fails_alone(service: Service, user: User, tmp_path: Path) -> None:
    good = write_pngs(tmp_path, 2, seed=12)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is text, not a picture")
    with Client(service.url, user.key) as client:
        sub = client.submit([good[0], fake, good[1]], "hrnet")
    assert set(sub.images) == set(good)
    refused = sub.rejected[fake]
    assert isinstance(refused, UnsupportedMediaType) and refused.code == "unsupported_format"
    assert sorted(str(r["filename"]) for r in image_rows(service, user)) == [
        "img00.png",
        "img01.png",
    ]


def test_a_large_submission_is_split_to_the_servers_limits(
    service: Service, small_gateway: str, user: User, tmp_path: Path
) -> None:
    paths = write_pngs(tmp_path, 2 * SMALL_MAX_FILES + 1, seed=13)

    async def scenario() -> list[Event]:
        async with AsyncClient(small_gateway, user.key, max_concurrency=2) as client:
            assert (await client.limits()).max_files_per_job == SMALL_MAX_FILES
            sub = await client.submit(paths, "cbam_resunet")
            assert sorted(len(j.images) for j in sub.jobs) == [1, SMALL_MAX_FILES, SMALL_MAX_FILES]
            return [e async for e in client.watch([j.id for j in sub.jobs])]

    events = asyncio.run(scenario())
    assert sum(e.name == "job.done" and e.data["status"] == "done" for e in events) == 3
    rows = image_rows(service, user)
    assert len(rows) == len(paths) and {r["status"] for r in rows} == {"done"}


def test_watch_falls_back_to_polling_when_the_socket_cannot_connect(
    service: Service, user: User, tmp_path: Path
) -> None:
    paths = write_pngs(tmp_path, 2, seed=14)
    with ServerThread(Proxy(service.url)) as proxy:
        with Client(proxy.url, user.key) as client:
            sub = client.submit(paths, "hrnet")
            events = list(client.watch(sub.jobs[0].id, poll_interval=0.3, connect_timeout=2))
    assert events and {e.source for e in events} == {"poll"}
    assert events[-1].name == "job.done" and events[-1].data["status"] == "done"


def test_segment_answers_one_images_result(service: Service, user: User, tmp_path: Path) -> None:
    [path] = write_pngs(tmp_path, 1, seed=15)
    with Client(service.url, user.key) as client:
        body = client.segment(path, "hrnet")
        stored = client.image_result(body["job_id"], body["image_id"])
    assert body["count"] == stored["count"] and body["model"] == "hrnet"


def test_typed_errors_carry_the_servers_code(service: Service, user: User, tmp_path: Path) -> None:
    [path] = write_pngs(tmp_path, 1, seed=16)
    with Client(service.url, user.key) as client:
        with pytest.raises(NotFound) as missing:
            client.job("00000000-0000-0000-0000-000000000000")
        with pytest.raises(ValidationFailed) as model:
            client.submit([path], "resnet9000")
    assert missing.value.code == "not_found" and model.value.code == "unknown_model"
    with Client(service.url, "not-a-key") as client, pytest.raises(Unauthorized) as auth:
        client.jobs()
    assert auth.value.status == 401 and auth.value.message
    assert image_rows(service, user) == []


def test_without_a_worker_segment_times_out_and_cancel_cancels(
    service: Service, user: User, tmp_path: Path
) -> None:
    paths = write_pngs(tmp_path, 3, seed=17)
    service.stop("worker")
    try:
        with Client(service.url, user.key) as client:
            with pytest.raises(GatewayTimeout) as timeout:
                client.segment(paths[0], "hrnet")
            details = timeout.value.details
            assert timeout.value.code == "timeout" and details["status"] == "cancelled"
            assert client.job(details["job_id"]).status == "cancelled"
            sub = client.submit(paths, "hrnet")
            answer = client.cancel(sub.jobs[0].id)
            assert answer["cancelled"] == 3 and answer["status"] == "cancelled"
            events = list(client.watch(sub.jobs[0].id))
            assert events[-1].name == "job.done" and events[-1].data["status"] == "cancelled"
    finally:
        service.start_worker()
        service.wait_ready()


def test_split_and_diameter_are_sent(service: Service, user: User, tmp_path: Path) -> None:
    (path,) = write_pngs(tmp_path, 1, seed=13)
    with Client(service.url, user.key) as client:
        result = client.segment(path, "hrnet", split=False, diameter=30)
        assert (result["split"], result["diameter"]) == (False, 30)
        job = client.create_job([path], "unet", diameter="auto")
        assert job.id
        with pytest.raises(ValidationFailed) as refused:
            client.segment(path, "hrnet", diameter=4)
    assert refused.value.code == "invalid_diameter" and "diameter" in str(refused.value)
