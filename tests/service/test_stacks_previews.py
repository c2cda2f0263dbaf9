"""Through the running service: a z-stack segmented at the plane the job names, and every
result's preview (8-bit, the engine's contrast) next to its mask."""

from __future__ import annotations

import io
import time
from typing import Any

import cv2
import httpx
import numpy as np
import tifffile

from ml_service.training.synthetic import generate_sample
from tests.harness import Service


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_done(service: Service, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{service.url}/api/v1/jobs/{job_id}", headers=auth(key)).json()
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.3)
    raise TimeoutError(service.diagnostics())


def test_the_chosen_plane_is_segmented_and_its_preview_is_stored(service: Service) -> None:
    key = service.create_user("stacks")
    cells = generate_sample(np.random.default_rng(3), 256, "cells").image.astype(np.uint16)
    stack = np.full((5, 256, 256), 30_000, np.uint16)  # four blank planes at a dim level
    stack[2] += cells * 4  # 16-bit, narrow range: cells only in plane 2
    buf = io.BytesIO()
    tifffile.imwrite(buf, stack, imagej=True, metadata={"axes": "ZYX"})
    objects = {}
    for plane in (2, 0):
        r = httpx.post(
            f"{service.url}/api/v1/jobs",
            files=[("files", ("stack.tif", buf.getvalue(), "image/tiff"))],
            data={"model": "unet", "plane": str(plane)},
            headers=auth(key),
        )
        assert r.status_code == 202, r.text
        job = wait_done(service, key, r.json()["id"])
        image = job["images"][0]
        assert image["status"] == "done", image
        objects[plane] = image["objects"]
        base = f"{service.url}/api/v1/jobs/{job['id']}/images/{image['id']}"
        result = httpx.get(f"{base}/result", headers=auth(key)).json()
        assert 0 < result["timings_ms"]["inference"] <= result["timings_ms"]["total"]
        preview = httpx.get(f"{base}/preview.png", headers=auth(key))
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        pixels = cv2.imdecode(np.frombuffer(preview.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (256, 256) and pixels.dtype == np.uint8
        if plane == 2:
            assert pixels.min() == 0 and pixels.max() == 255  # stretched, not a black frame
    assert objects[2] > 0 and objects[0] == 0  # the cells are in plane 2 only
