"""The page at ``/`` in a real headless Chromium against the running service (gateway, worker,
PostgreSQL, Redis): upload, live progress, the overlay, downloads, previous jobs, cancel, and
the API's errors as the page shows them."""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from playwright.sync_api import Page, expect
from scipy import ndimage

from tests.harness import Service

DONE_TIMEOUT_MS = 120_000


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api(service: Service, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{service.url}/api/v1{path}", headers=auth(key), timeout=30)


def use_key(page: Page, service: Service, key: str) -> None:
    page.goto(service.url)
    page.fill("#api-key", key)
    page.click("#save-key")


def ready_with_key(page: Page, service: Service, key: str) -> None:
    use_key(page, service, key)
    expect(page.locator("#model")).to_be_enabled()


def wait_job(service: Service, key: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api(service, key, f"/jobs/{job_id}").json()
        if body["status"] not in ("queued", "running"):
            return dict(body)
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not finished\n{service.diagnostics()}")


def canvas_point(page: Page, x: float, y: float, width: int) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y)'s centre on the viewer's canvas (scrolled into
    view: the mouse reaches only what the viewport shows)."""
    canvas = page.locator("#canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    scale = box["width"] / width
    return box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale


def png_without_pixels(width: int = 300, height: int = 200) -> bytes:
    """A PNG whose header is sound (the gateway accepts it) but whose pixel data is not: it
    fails in the worker, at decoding."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def deepest_pixel(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` farthest from its edge."""
    # padded: outside the image counts as background, so an object touching the border is
    # not deepest on the border (on its outline there)
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def test_two_images_reach_done_and_the_overlay_matches_the_api(
    service: Service, page: Page, image_files: list[Path], screenshot: Any
) -> None:
    key = service.create_user("web-upload")
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
    ready_with_key(page, service, key)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.select_option("#model", "unet")
    page.set_input_files("#files", [str(p) for p in image_files])
    expect(page.locator("#picked li")).to_have_count(2)
    expect(page.locator("#submit")).to_have_text("Segment 2 images")
    page.click("#submit")

    rows = page.locator(".image-row")
    expect(rows).to_have_count(2)
    expect(page.locator('.image-row[data-status="done"]')).to_have_count(2, timeout=DONE_TIMEOUT_MS)
    expect(page.locator("#job")).to_have_attribute("data-status", "done")
    expect(page.locator("#job-progress-text")).to_contain_text("2 of 2 done")
    job_id = page.get_attribute("#job", "data-job-id")
    assert job_id
    assert any("image.update" in f for f in frames), "no Socket.IO event reached the page"
    job = api(service, key, f"/jobs/{job_id}").json()
    assert job["status"] == "done" and job["model"] == "unet"
    expect(page.locator(f'.job-row[data-job-id="{job_id}"]')).to_have_attribute(
        "aria-current", "true"
    )

    # the rings image: objects with holes
    rows.nth(1).click()
    image_id = rows.nth(1).get_attribute("data-image-id")
    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-ready", "true")
    result = api(service, key, f"/jobs/{job_id}/images/{image_id}/result").json()
    expected = len(result["objects"])
    assert expected > 0
    expect(page.locator("#object-count")).to_have_text(str(expected))
    expect(page.locator("#metrics tbody tr")).to_have_count(expected)
    expect(page.locator("#viewer-note")).to_contain_text("Showing rings.png")
    assert rows.nth(1).inner_text().count(f"{expected} objects") == 1

    # the polygons lie on the label mask's pixels; a hole shows what is under it (even-odd)
    mask_bytes = api(service, key, f"/jobs/{job_id}/images/{image_id}/mask.png").content
    labels = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    width = result["width"]
    for obj in result["objects"][:3]:
        page.mouse.move(*canvas_point(page, *deepest_pixel(labels == obj["id"]), width))
        expect(page.locator("#metrics tbody tr.hovered")).to_have_attribute(
            "data-id", str(obj["id"])
        )
    holed = [o for o in result["objects"] if o["holes"]]
    assert holed, "the rings image gave no object with a hole"
    ring = max(holed, key=lambda o: o["metrics"]["area"])
    inside = labels == ring["id"]
    hole = ndimage.binary_fill_holes(inside) & ~inside & (labels == 0)
    page.mouse.move(*canvas_point(page, *deepest_pixel(hole), width))
    expect(page.locator("#metrics tbody tr.hovered")).to_have_count(0)
    page.mouse.move(*canvas_point(page, *deepest_pixel(inside), width))
    expect(page.locator("#metrics tbody tr.hovered")).to_have_attribute("data-id", str(ring["id"]))
    path = screenshot(page, "job-done-overlay")
    assert path.stat().st_size > 10_000

    # downloads: fetched with the key, saved from a blob
    with page.expect_download() as download:
        page.click("#dl-geojson")
    assert download.value.suggested_filename == "rings.geojson"
    geojson = json.loads(Path(download.value.path()).read_text())
    assert len(geojson["features"]) == expected
    with page.expect_download() as download:
        page.click("#dl-coco")
    assert download.value.suggested_filename == "rings.coco.json"
    assert len(json.loads(Path(download.value.path()).read_text())["annotations"]) == expected
    with page.expect_download() as download:
        page.click("#dl-mask")
    assert Path(download.value.path()).read_bytes() == mask_bytes

    # the other image: its own count
    rows.nth(0).click()
    other_id = rows.nth(0).get_attribute("data-image-id")
    other = api(service, key, f"/jobs/{job_id}/images/{other_id}/result").json()
    expect(page.locator("#object-count")).to_have_text(str(len(other["objects"])))
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_previous_job_is_drawn_over_the_services_preview_of_its_original(
    service: Service, page: Page, image_files: list[Path], screenshot: Any
) -> None:
    key = service.create_user("web-previous")
    files = [("files", ("cells.png", image_files[0].read_bytes(), "image/png"))]
    r = httpx.post(
        f"{service.url}/api/v1/jobs", files=files, data={"model": "hrnet"}, headers=auth(key)
    )
    assert r.status_code == 202, r.text
    job = wait_job(service, key, r.json()["id"])
    image_id = job["images"][0]["id"]
    result = api(service, key, f"/jobs/{job['id']}/images/{image_id}/result").json()
    expected = len(result["objects"])

    page.add_init_script(f"localStorage.setItem('cellseg.apiKey', {json.dumps(key)})")
    page.goto(service.url)  # the stored key is used at once
    job_row = page.locator(f'.job-row[data-job-id="{job["id"]}"]')
    expect(job_row).to_contain_text("1/1 done")
    job_row.click()
    page.locator(f'.image-row[data-image-id="{image_id}"]').click()
    expect(page.locator("#viewer")).to_have_attribute("data-ready", "true")
    expect(page.locator("#object-count")).to_have_text(str(expected))
    expect(page.locator("#viewer")).to_have_attribute("data-base", "preview")
    expect(page.locator("#viewer-note")).to_contain_text("Showing cells.png")
    expect(page.locator("#source-pick")).to_be_hidden()
    screenshot(page, "previous-job-preview")

    page.reload()  # the address names the job and image: both open again
    expect(page.locator("#viewer")).to_have_attribute("data-image-id", image_id)
    expect(page.locator("#viewer")).to_have_attribute("data-ready", "true")
    assert page.problems == []  # type: ignore[attr-defined]


@contextmanager
def worker_paused(service: Service) -> Iterator[None]:
    """Freeze the session's worker (SIGSTOP to its process group) so that no image starts;
    Celery messages wait in Redis and a cancelled image is skipped once it resumes."""
    proc = service.procs["worker"]
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def test_without_socketio_the_page_polls_and_cancel_ends_the_job(
    service: Service, page: Page, image_files: list[Path], screenshot: Any
) -> None:
    key = service.create_user("web-cancel")
    page.route("**/socket.io/**", lambda route: route.abort())
    ready_with_key(page, service, key)
    expect(page.locator("#conn")).to_have_attribute("data-state", "polling")
    # drag and drop: a DataTransfer holding both files, dropped on the drop zone
    payload = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in image_files]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, { type: 'image/png' }));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#picked li")).to_have_count(2)
    with worker_paused(service):
        page.click("#submit")
        expect(page.locator(".image-row")).to_have_count(2)
        expect(page.locator("#cancel-job")).to_be_visible()  # queued, or dispatched: not started
        page.click("#cancel-job")
        expect(page.locator("#job-notice")).to_have_text("Cancelled 2 images.")
        # polling (no socket) brings the page to the REST state
        expect(page.locator("#job")).to_have_attribute("data-status", "cancelled")
    job_id = page.get_attribute("#job", "data-job-id")
    final = api(service, key, f"/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["counts"]["cancelled"] == 2
    expect(page.locator('.image-row[data-status="cancelled"]')).to_have_count(2)
    expect(page.locator("#cancel-job")).to_be_hidden()
    expect(page.locator("#job-progress-text")).to_have_text("Finished: 0 of 2 done · 2 cancelled")
    assert page.eval_on_selector("#job-progress", "bar => bar.value") == 0  # not "finished"
    expect(page.locator("#conn")).to_have_attribute("data-state", "polling")
    screenshot(page, "cancelled-job-polling")


def test_an_invalid_key_shows_the_api_401_message(
    service: Service, page: Page, screenshot: Any
) -> None:
    answer = api(service, "csk_not-a-key", "/models")
    assert answer.status_code == 401
    error = answer.json()["error"]
    use_key(page, service, "csk_not-a-key")
    alert = page.locator("#alert")
    expect(alert).to_be_visible()
    expect(page.locator("#alert-message")).to_have_text(error["message"])
    expect(page.locator("#alert-code")).to_have_text(error["code"])
    expect(page.locator("#alert-status")).to_have_text("HTTP 401")
    expect(page.locator("#conn")).to_have_attribute("data-state", "refused")
    expect(page.locator("#model")).to_be_disabled()
    screenshot(page, "invalid-key")
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_non_image_is_refused_by_the_page_before_upload_as_the_api_would(
    service: Service, page: Page, screenshot: Any
) -> None:
    key = service.create_user("web-bad-file")
    content = b"cell counts, not an image\n"
    answer = httpx.post(
        f"{service.url}/api/v1/jobs",
        files=[("files", ("notes.txt", content, "text/plain"))],
        data={"model": "hrnet"},
        headers=auth(key),
    )
    assert answer.status_code == 415  # what the page spares the user from waiting for
    assert answer.json()["error"]["message"].startswith("notes.txt (file 1): ")
    ready_with_key(page, service, key)
    page.set_input_files(
        "#files", [{"name": "notes.txt", "mimeType": "text/plain", "buffer": content}]
    )
    expect(page.locator("#refused-list li")).to_have_text(
        "notes.txt: its content is not a PNG, JPEG or TIFF image"
    )
    expect(page.locator("#picked li")).to_have_count(0)
    expect(page.locator("#submit")).to_be_disabled()
    expect(page.locator("#job")).to_be_hidden()
    assert api(service, key, "/jobs").json()["total"] == 0
    screenshot(page, "non-image-upload")
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_image_failing_in_the_worker_shows_its_error_as_the_api_words_it(
    service: Service, page: Page, screenshot: Any
) -> None:
    key = service.create_user("web-failed-image")
    ready_with_key(page, service, key)
    page.set_input_files(
        "#files", [{"name": "broken.png", "mimeType": "image/png", "buffer": png_without_pixels()}]
    )
    page.click("#submit")
    row = page.locator(".image-row")
    expect(row).to_have_attribute("data-status", "failed", timeout=DONE_TIMEOUT_MS)
    job_id = page.get_attribute("#job", "data-job-id")
    error = api(service, key, f"/jobs/{job_id}").json()["images"][0]["error"]
    expect(row.locator(".error-message")).to_have_text(error["message"])
    expect(row.locator(".error-code")).to_have_text(error["code"])
    expect(page.locator("#job")).to_have_attribute("data-status", "failed")
    row.click()
    expect(page.locator("#viewer-state .error-message")).to_have_text(error["message"])
    expect(page.locator("#downloads")).to_be_hidden()
    screenshot(page, "failed-image")
    assert page.problems == []  # type: ignore[attr-defined]
