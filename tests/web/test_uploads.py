"""The page with every accepted format and with selections the service would refuse, in
Chromium against a service of its own whose upload limit is small (MAX_UPLOAD_MB=20):
TIFF originals under their outlines, files refused before uploading, errors that name the
file, a selection split into several jobs, downloads (measurements CSV, GeoJSON per image)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import httpx
import numpy as np
import pytest
import tifffile
from playwright.sync_api import Page, expect

from ml_service.training.synthetic import generate_sample
from tests.harness import Service, running_service

T = TypeVar("T")
DONE_TIMEOUT_MS = 180_000
UPLOAD_MB = 20


def in_thread(call: Callable[[], T]) -> T:
    """``call()`` in a thread of its own: the service's set-up and tear-down run asyncio
    loops, which cannot start inside Playwright's running one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture(scope="module")
def small_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    started = running_service(
        tmp_path_factory.mktemp("small-limits"), {"MAX_UPLOAD_MB": str(UPLOAD_MB)}
    )
    svc = in_thread(started.__enter__)
    try:
        yield svc
    finally:
        in_thread(lambda: started.__exit__(None, None, None))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ready(page: Page, service: Service, key: str) -> None:
    page.goto(service.url)
    page.fill("#api-key", key)
    page.click("#save-key")
    expect(page.locator("#model")).to_be_enabled()
    page.select_option("#model", "unet")


def tiff(path: Path, data: np.ndarray, **kw: Any) -> Path:
    tifffile.imwrite(path, data, **kw)
    return path


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of cells as TIFF 8-bit, 16-bit (dim, narrow range), multi-page (cells on
    page 1 of 3) and RGB (cells in the green channel)."""
    folder = tmp_path_factory.mktemp("tiffs")
    cells = generate_sample(np.random.default_rng(21), 256, "cells").image
    pages = np.zeros((3, 256, 256), np.uint8)
    pages[1] = cells
    rgb = np.zeros((256, 256, 3), np.uint8)
    rgb[..., 1] = cells
    return {
        "8-bit": tiff(folder / "grey8.tif", cells),
        "16-bit": tiff(folder / "grey16.tif", cells.astype(np.uint16) * 8 + 30_000),
        "multi-page": tiff(folder / "pages.tif", pages, photometric="minisblack"),
        "rgb": tiff(folder / "rgb.tif", rgb),
    }


def canvas_levels(page: Page) -> int:
    """How many distinct grey levels the viewer's canvas shows (a blank canvas has 1-3)."""
    return int(
        page.evaluate(
            """() => {
                const c = document.getElementById('canvas');
                const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const seen = new Set();
                for (let i = 0; i < px.length; i += 4 * 7) seen.add(px[i] + px[i + 1] + px[i + 2]);
                return seen.size;
            }"""
        )
    )


def test_every_tiff_kind_is_shown_under_its_outlines_and_downloads_work(
    small_service: Service, page: Page, tiffs: dict[str, Path], screenshot: Any
) -> None:
    key = small_service.create_user("web-tiffs")
    ready(page, small_service, key)
    page.fill("#plane", "1")  # the multi-page file's page 1; the others are no stacks
    page.set_input_files("#files", [str(p) for p in tiffs.values()])
    expect(page.locator("#picked li")).to_have_count(4)
    page.click("#submit")
    rows = page.locator(".image-row")
    expect(page.locator('.image-row[data-status="done"]')).to_have_count(4, timeout=DONE_TIMEOUT_MS)
    job_id = page.get_attribute("#job", "data-job-id")
    job_row = page.locator(f'.job-row[data-job-id="{job_id}"] .job-files')
    expect(job_row).to_have_text("grey8.tif, grey16.tif, pages.tif +1 more")
    for i, kind in enumerate(tiffs):
        rows.nth(i).click()
        viewer = page.locator("#viewer")
        expect(viewer).to_have_attribute(
            "data-image-id", rows.nth(i).get_attribute("data-image-id") or ""
        )
        expect(viewer).to_have_attribute("data-ready", "true")
        expect(viewer).to_have_attribute("data-base", "preview")
        assert int(viewer.get_attribute("data-objects") or 0) > 3, kind
        assert canvas_levels(page) > 50, f"{kind}: the original is not drawn"
        screenshot(page, f"viewer-tiff-{kind}")

    # the measurements of the shown image (RGB) as CSV, as the table lists them
    with page.expect_download() as download:
        page.click("#dl-csv")
    assert download.value.suggested_filename == "rgb.measurements.csv"
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(table) == int(page.get_attribute("#viewer", "data-objects") or 0)
    assert {"image", "object", "area", "perimeter", "circularity"} <= set(table[0])
    assert table[0]["image"] == "rgb.tif" and float(table[0]["area"]) > 0

    # Job GeoJSON: one FeatureCollection per image, zipped
    with page.expect_download() as download:
        page.click("#job-geojson")
    with zipfile.ZipFile(download.value.path()) as archive:
        names = archive.namelist()
        docs = {n: json.loads(archive.read(n)) for n in names}
    assert names == ["grey8.geojson", "grey16.geojson", "pages.geojson", "rgb.geojson"]
    assert all(d["type"] == "FeatureCollection" and d["features"] for d in docs.values())
    assert page.problems == []  # type: ignore[attr-defined]


def test_bad_files_are_refused_before_upload_and_the_service_names_the_one_it_refuses(
    small_service: Service, page: Page, tmp_path: Path, screenshot: Any
) -> None:
    key = small_service.create_user("web-bad-files")
    ready(page, small_service, key)
    cells = generate_sample(np.random.default_rng(5), 128, "cells").image
    ok, png = cv2.imencode(".png", cells)
    assert ok
    good = tmp_path / "good.png"
    good.write_bytes(png.tobytes())
    notes = tmp_path / "notes.png"
    notes.write_text("a text file, renamed")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.tobytes()[:80])  # a PNG signature, then nothing: only the service knows
    page.set_input_files("#files", [str(p) for p in (good, notes, empty, cut)])
    expect(page.locator("#picked li")).to_have_count(2)  # good.png, cut.png
    refused = page.locator("#refused-list li")
    expect(refused).to_have_count(2)
    expect(refused.nth(0)).to_contain_text("notes.png: its content is not a PNG, JPEG or TIFF")
    expect(refused.nth(1)).to_contain_text("empty.tif: the file is empty")
    page.click("#submit")
    error = page.locator("#form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("cut.png (file 2)")
    expect(error).to_contain_text("invalid_image")
    screenshot(page, "refused-files")
    jobs = httpx.get(f"{small_service.url}/api/v1/jobs", headers=auth(key)).json()
    assert jobs["total"] == 0  # nothing was kept
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_selection_over_the_upload_limit_is_split_into_jobs(
    small_service: Service, page: Page, tmp_path: Path, screenshot: Any
) -> None:
    """Six 8 MB 16-bit TIFFs with MAX_UPLOAD_MB=20: three jobs of two, not one 413."""
    key = small_service.create_user("web-split")
    rng = np.random.default_rng(8)
    paths = [
        tiff(tmp_path / f"big{i}.tif", rng.integers(0, 4096, (2048, 2048), dtype=np.uint16))
        for i in range(6)
    ]
    assert all(7.9e6 < p.stat().st_size < 8.5e6 for p in paths)
    ready(page, small_service, key)
    page.set_input_files("#files", [str(p) for p in paths])
    expect(page.locator("#picked li")).to_have_count(6)
    page.click("#submit")
    expect(page.locator("#form-note")).to_have_text(
        "Split into 3 jobs to stay within the service's limits "
        f"(100 images, {UPLOAD_MB} MB per job)."
    )
    jobs = httpx.get(f"{small_service.url}/api/v1/jobs", headers=auth(key)).json()["items"]
    for job in jobs:  # free the worker for whatever runs next
        httpx.delete(f"{small_service.url}/api/v1/jobs/{job['id']}", headers=auth(key))
    assert sorted(j["filenames"] for j in jobs) == [
        ["big0.tif", "big1.tif"],
        ["big2.tif", "big3.tif"],
        ["big4.tif", "big5.tif"],
    ]
    expect(page.locator(".job-row")).to_have_count(3)
    expect(page.locator("#picked li")).to_have_count(0)
    expect(page.locator("#form-error")).to_be_hidden()
    screenshot(page, "split-into-jobs")
    assert page.problems == []  # type: ignore[attr-defined]
