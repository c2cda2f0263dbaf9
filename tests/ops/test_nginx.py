"""A real nginx (Debian's) on a loopback port in front of the real gateway."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from scripts.render_nginx import render, values_for
from tests.harness import Service, free_port
from tests.ops.system import ensure_package
from tests.service.test_end_to_end import Listener, auth, make_pngs

MAX_UPLOAD_MB = 50  # the harness's gateway uses the default


@pytest.fixture(scope="module")
def front(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = ensure_package("nginx", "nginx")
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    upstream = urlparse(service.url).netloc
    conf = prefix / "nginx.conf"
    conf.write_text(
        render(
            values_for(
                [upstream],
                port,
                MAX_UPLOAD_MB,
                str(prefix),
                UPLOAD_RATE="1r/s",
                UPLOAD_BURST="2",
            )
        )
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(prefix / "stderr.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError(Path(prefix / "stderr.log").read_text())
    yield url
    proc.terminate()
    proc.wait(10)


def test_job_and_its_live_progress_through_nginx(service: Service, front: str) -> None:
    key = service.create_user("via-nginx")

    async def scenario() -> tuple[dict[str, object], Listener, httpx.Headers]:
        lst = Listener()
        await lst.connect(front, key)  # WebSocket upgrade through nginx
        async with httpx.AsyncClient(base_url=front, timeout=60) as http:
            files = [("files", ("a.png", make_pngs(41, 1)[0], "image/png"))]
            r = await http.post(
                "/api/v1/jobs",
                files=files,
                data={"model": "hrnet"},
                headers={**auth(key), "X-Request-ID": "trace-123"},
            )
            assert r.status_code == 202, r.text
            job = r.json()
            await asyncio.wait_for(lst.done[job["id"]].wait(), 120)
        await lst.sio.disconnect()
        return job, lst, r.headers

    job, lst, headers = asyncio.run(scenario())
    assert headers["x-request-id"] == "trace-123"
    assert [u["status"] for u in lst.of("image.update")][-1] == "done"
    assert lst.of("job.done")[0]["job_id"] == job["id"]


def test_request_id_is_made_when_missing_and_json_is_gzipped(front: str) -> None:
    r = httpx.get(f"{front}/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert len(r.headers["x-request-id"]) >= 16
    assert r.json()["info"]["title"] == "CellSeg Serve"  # decoded transparently


def test_upload_over_the_limit_is_refused_by_nginx_as_json(front: str) -> None:
    body = b"0" * ((MAX_UPLOAD_MB + 2) * 1024 * 1024)
    r = httpx.post(
        f"{front}/api/v1/jobs",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=x", **auth("k")},
        timeout=60,
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "upload_too_large"


def test_uploads_are_rate_limited_per_api_key_with_a_json_429(service: Service, front: str) -> None:
    greedy, polite = service.create_user("greedy"), service.create_user("polite")
    statuses = []
    for _ in range(8):  # 1 r/s, burst 2: most of these are refused at once
        r = httpx.post(
            f"{front}/api/v1/jobs",
            files=[("files", ("x.png", b"x", "image/png"))],
            data={"model": "no-such-model"},
            headers=auth(greedy),
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert r.headers["retry-after"] == "1"
    assert statuses.count(429) >= 4
    assert set(statuses) - {429} <= {415, 422}  # the ones let through reached the gateway
    other = httpx.post(
        f"{front}/api/v1/jobs",
        files=[("files", ("x.png", b"x", "image/png"))],
        data={"model": "no-such-model"},
        headers=auth(polite),
    )
    assert other.status_code != 429  # another key has its own budget
