"""The whole service on loopback: REST uploads, Celery worker, Socket.IO progress, fairness,
cancellation and a worker killed mid-job. Real PostgreSQL, Redis, uvicorn and Celery."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from typing import Any

import cv2
import httpx
import numpy as np
import socketio

from ml_service.serving.engine import Engine
from ml_service.settings import EngineSettings
from ml_service.training.evaluation import iou
from ml_service.training.synthetic import generate_sample
from tests.harness import Service

MODELS = ("hrnet", "unet", "cbam_resunet")


def make_pngs(seed: int, n: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ok, buf = cv2.imencode(".png", generate_sample(rng, 256, "cells").image)
        assert ok
        out.append(buf.tobytes())
    return out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(
    http: httpx.AsyncClient, key: str, pngs: list[bytes], model: str, **form: Any
) -> dict[str, Any]:
    files = [("files", (f"img{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    r = await http.post(
        "/api/v1/jobs", files=files, data={"model": model, **form}, headers=auth(key)
    )
    assert r.status_code == 202, r.text
    return dict(r.json())


class Listener:
    """A Socket.IO client collecting every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.done: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        for name in ("image.update", "job.progress", "job.done"):
            self.sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Any:
        async def handle(data: dict[str, Any]) -> None:
            self.events.append((name, data))
            if name == "job.done":
                self.done[data["job_id"]].set()

        return handle

    async def connect(self, url: str, key: str) -> None:
        await self.sio.connect(url, auth={"token": key}, transports=["websocket"])

    def of(self, name: str) -> list[dict[str, Any]]:
        return [d for n, d in self.events if n == name]


async def wait_done(listener: Listener, job_id: str, timeout: float) -> None:
    await asyncio.wait_for(listener.done[job_id].wait(), timeout)


def test_eight_users_at_once_get_their_own_results_and_events(service: Service) -> None:
    keys = [service.create_user(f"user{i}") for i in range(8)]
    images = {i: make_pngs(100 + i, 3) for i in range(8)}

    async def scenario() -> tuple[list[Listener], list[dict[str, Any]]]:
        listeners = [Listener() for _ in keys]
        await asyncio.gather(
            *(lst.connect(service.url, k) for lst, k in zip(listeners, keys, strict=True))
        )
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            jobs = await asyncio.gather(
                *(submit(http, k, images[i], MODELS[i % 3]) for i, k in enumerate(keys))
            )
            await asyncio.gather(
                *(wait_done(lst, j["id"], 240) for lst, j in zip(listeners, jobs, strict=True))
            )
            await asyncio.sleep(0.5)  # anything stray would arrive now
        for lst in listeners:
            await lst.sio.disconnect()
        return listeners, jobs

    listeners, jobs = asyncio.run(scenario())
    engine = Engine.from_settings(EngineSettings(device="cpu", compile="off"))  # as the workers
    try:
        for i, (lst, job) in enumerate(zip(listeners, jobs, strict=True)):
            own = {img["id"] for img in job["images"]}
            updates = lst.of("image.update")
            seen = {u["image_id"] for u in updates}
            assert seen == own, (  # all of its own, nothing else
                f"user {i}: missing {own - seen}, foreign {seen - own}, events {lst.events}"
            )
            done_updates = {u["image_id"] for u in updates if u["status"] == "done"}
            assert done_updates == own
            assert [d["job_id"] for d in lst.of("job.done")] == [job["id"]]
            assert lst.of("job.done")[0]["status"] == "done"
            assert all(p["job_id"] == job["id"] for p in lst.of("job.progress"))
            r = httpx.get(f"{service.url}/api/v1/jobs/{job['id']}", headers=auth(keys[i]))
            body = r.json()
            assert body["status"] == "done" and body["counts"]["done"] == 3
            # same polygons as the engine in process
            for img, data in zip(job["images"], images[i], strict=True):
                mask = httpx.get(
                    f"{service.url}/api/v1/jobs/{job['id']}/images/{img['id']}/mask.png",
                    headers=auth(keys[i]),
                )
                assert mask.status_code == 200
                served = cv2.imdecode(np.frombuffer(mask.content, np.uint8), cv2.IMREAD_UNCHANGED)
                local = engine.segment(data, job["model"])
                assert iou(served > 0, local.labels > 0) >= 0.99
                result = httpx.get(
                    f"{service.url}/api/v1/jobs/{job['id']}/images/{img['id']}/result",
                    headers=auth(keys[i]),
                ).json()
                assert len(result["objects"]) == len(local.objects)
    finally:
        engine.close()


def test_small_job_is_not_starved_by_a_big_one(service: Service) -> None:
    """At the default window (about two batches per worker), a 1-image job submitted right
    after another user's 30 images finishes within a few batches of them."""
    big_key, small_key = service.create_user("big"), service.create_user("small")
    big_images = make_pngs(7, 30)
    small_image = make_pngs(8, 1)

    async def scenario() -> tuple[str, str]:
        lst = Listener()
        await lst.connect(service.url, small_key)
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            big = await submit(http, big_key, big_images, "cbam_resunet")
            small = await submit(http, small_key, small_image, "cbam_resunet")
            await wait_done(lst, small["id"], 120)
        await lst.sio.disconnect()
        return big["id"], small["id"]

    big_id, small_id = asyncio.run(scenario())
    done = service.db(  # the big job's images finished before the small one
        "SELECT count(*) AS n FROM images WHERE job_id = $1 AND status = 'done' AND "
        "finished_at < (SELECT max(finished_at) FROM images WHERE job_id = $2)",
        big_id,
        small_id,
    )[0]["n"]
    assert done < 7, f"the 1-image job waited for {done} of the big job's 30 images"
    wait_job(service, big_key, big_id, 240)


def wait_job(service: Service, key: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        r = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", headers=auth(key), timeout=10)
        if r.status_code == 200:  # 503 while a dependency comes back: keep waiting
            body = r.json()
            if body["status"] not in ("queued", "running"):
                return dict(body)
        time.sleep(0.3)
    counts = body["counts"] if body else None
    raise TimeoutError(f"job {job_id} not finished: {counts}\n{service.diagnostics()}")


def test_cancel_stops_images_not_started(service: Service) -> None:
    key = service.create_user("canceller")
    images = make_pngs(9, 40)

    async def scenario() -> tuple[dict[str, Any], Listener]:
        lst = Listener()
        await lst.connect(service.url, key)
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            job = await submit(http, key, images, "cbam_resunet")
            r = await http.delete(f"/api/v1/jobs/{job['id']}", headers=auth(key))
            assert r.status_code == 200, r.text
            assert r.json()["cancelled"] > 0
            await wait_done(lst, job["id"], 120)
            await asyncio.sleep(0.5)
        await lst.sio.disconnect()
        return job, lst

    job, lst = asyncio.run(scenario())
    body = wait_job(service, key, job["id"], 60)
    assert body["status"] == "cancelled"
    assert body["counts"]["cancelled"] > 0
    assert body["counts"]["cancelled"] + body["counts"]["done"] == 40
    assert len(lst.of("job.done")) == 1


def test_worker_killed_mid_job_loses_and_duplicates_nothing(service: Service) -> None:
    """SIGKILL mid-job (as the OOM killer does) and a new worker: what the dead worker held
    goes back to the queue once its heartbeat expires, not after the broker's visibility
    timeout; every image is stored once and the connected owner gets one job.done."""
    key = service.create_user("survivor")
    images = make_pngs(11, 30)

    async def scenario() -> tuple[str, float, Listener]:
        lst = Listener()
        await lst.connect(service.url, key)
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            job = await submit(http, key, images, "cbam_resunet")
            while True:
                r = await http.get(f"/api/v1/jobs/{job['id']}", headers=auth(key))
                if r.json()["counts"]["done"] >= 3:
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(service.stop, "worker", signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.to_thread(service.start_worker, "worker")
            await wait_done(lst, job["id"], 120)
            took = time.monotonic() - killed
            await asyncio.sleep(1.0)  # a duplicate job.done would arrive meanwhile
        await lst.sio.disconnect()
        return str(job["id"]), took, lst

    job_id, took, lst = asyncio.run(scenario())
    print(f"worker killed: job done {took:.1f} s after the kill")
    body = wait_job(service, key, job_id, 30)
    assert body["status"] == "done", body["counts"]
    assert took < 60, f"job finished {took:.0f} s after the kill\n{service.diagnostics()}"
    assert len([d for d in lst.of("job.done") if d["job_id"] == job_id]) == 1
    rows = service.db(
        "SELECT count(*) AS n, count(DISTINCT r.image_id) AS d FROM results r "
        "JOIN images i ON i.id = r.image_id WHERE i.job_id = $1",
        job_id,
    )[0]
    assert rows["n"] == rows["d"] == 30
    service.wait_ready()


def test_metrics_show_images_batches_and_queue_depth(service: Service) -> None:
    key = service.create_user("metered")
    with httpx.Client(base_url=service.url, timeout=60) as http:
        files = [("files", (f"m{i}.png", d, "image/png")) for i, d in enumerate(make_pngs(51, 4))]
        job = http.post("/api/v1/jobs", files=files, data={"model": "unet"}, headers=auth(key))
        wait_job(service, key, job.json()["id"], 120)
        async_clients = asyncio.run(_connected_count(service, key))
    gateway = httpx.get(f"{service.url}/metrics").text
    assert "cellseg_images_processed_total" in gateway
    assert "cellseg_batches_total" in gateway
    assert "cellseg_queue_depth" in gateway
    assert "cellseg_queue_in_flight" in gateway
    assert async_clients == 1.0
    worker = httpx.get(service.worker_metrics_url).text
    done = metric(worker, 'cellseg_worker_images_total{model="unet",status="done"}')
    assert done >= 4
    assert metric(worker, 'cellseg_batch_size_count{model="unet"}') >= 1
    assert metric(worker, 'cellseg_inference_seconds_count{model="unet"}') >= 1
    assert metric(worker, 'cellseg_queue_wait_seconds_count{model="unet"}') >= 4
    assert metric(worker, 'cellseg_oom_retries_total{model="unet"}') == 0
    assert metric(worker, 'cellseg_sizer_memory_bytes{kind="capacity"}') > 0
    assert metric(worker, 'cellseg_batch_ceiling{model="unet"}') >= 1
    assert 'cellseg_device_memory_bytes{device="cpu-' in worker


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


async def _connected_count(service: Service, key: str) -> float:
    lst = Listener()
    await lst.connect(service.url, key)
    try:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{service.url}/metrics")).text
        return metric(text, "cellseg_socketio_connections")
    finally:
        await lst.sio.disconnect()


def test_segment_answers_with_the_result(service: Service) -> None:
    key = service.create_user("scripter")
    data = make_pngs(31, 1)[0]
    r = httpx.post(
        f"{service.url}/api/v1/segment",
        files={"file": ("one.png", data, "image/png")},
        data={"model": "hrnet", "threshold": "0.5", "min_area": "20"},
        headers=auth(key),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 256 and body["height"] == 256 and body["objects"]
    assert body["min_area"] == 20
    job = httpx.get(f"{service.url}/api/v1/jobs/{body['job_id']}", headers=auth(key)).json()
    assert job["status"] == "done" and job["images"][0]["id"] == body["image_id"]
    bad = httpx.post(
        f"{service.url}/api/v1/segment",
        files={"file": ("x.txt", b"not an image", "text/plain")},
        data={"model": "hrnet"},
        headers=auth(key),
    )
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_format"


def test_split_and_diameter_reach_the_worker(service: Service) -> None:
    key = service.create_user("sizes")
    image = np.full((240, 240), 20, np.uint8)
    for cx in (90, 138):  # two touching discs of radius 30 (diameter 60), centres 1.6 r apart
        cv2.circle(image, (cx, 120), 30, 200, -1)
    data = cv2.imencode(".png", cv2.GaussianBlur(image, (0, 0), 3.0))[1].tobytes()

    def segment(**fields: str) -> dict[str, Any]:
        r = httpx.post(
            f"{service.url}/api/v1/segment",
            files={"file": ("discs.png", data, "image/png")},
            data={"model": "hrnet", "min_area": "20", **fields},
            headers=auth(key),
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    split = segment(diameter="60")
    assert (split["split"], split["diameter"], split["diameter_px"]) == (True, 60, 60)
    assert len(split["objects"]) == 2
    areas = [o["metrics"]["area"] for o in split["objects"]]
    assert all(abs(a - np.pi * 30**2) < 0.15 * np.pi * 30**2 for a in areas), areas
    merged = segment(diameter="60", split="false")
    assert merged["split"] is False and len(merged["objects"]) == 1
    bad = httpx.post(
        f"{service.url}/api/v1/segment",
        files={"file": ("discs.png", data, "image/png")},
        data={"model": "hrnet", "diameter": "500"},  # larger than the 240 px image
        headers=auth(key),
        timeout=30,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_diameter"


def test_segment_timeout_cancels_an_image_that_never_started(service: Service) -> None:
    key = service.create_user("impatient")
    service.stop("worker")
    try:
        r = httpx.post(
            f"{service.url}/api/v1/segment",
            files={"file": ("one.png", make_pngs(32, 1)[0], "image/png")},
            data={"model": "unet"},
            headers=auth(key),
            timeout=30,
        )
        assert r.status_code == 504, r.text
        error = r.json()["error"]
        assert error["code"] == "timeout" and error["status"] == "cancelled"
        rows = service.db("SELECT status FROM images WHERE id = $1", error["image_id"])
        assert rows[0]["status"] == "cancelled"
    finally:
        service.start_worker()
        service.wait_ready()


def test_socket_refuses_bad_keys_and_other_users_jobs(service: Service) -> None:
    owner, other = service.create_user("owner"), service.create_user("other")

    async def scenario() -> None:
        for token in (None, "wrong-key"):
            sio = socketio.AsyncClient(reconnection=False)
            refused = False
            try:
                await sio.connect(
                    service.url, auth={"token": token} if token else None, transports=["websocket"]
                )
            except socketio.exceptions.ConnectionError:
                refused = True
            assert refused, f"connected with token {token!r}"
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            job = await submit(http, owner, make_pngs(33, 1), "hrnet")
        snoop = socketio.AsyncClient(reconnection=False)
        await snoop.connect(service.url, auth={"token": other}, transports=["websocket"])
        answer = await snoop.call("subscribe", {"job_id": job["id"]}, timeout=10)
        assert answer["error"]["code"] == "not_found"
        assert answer["error"]["retryable"] is False  # the REST errors' shape
        await snoop.disconnect()

    asyncio.run(scenario())
