"""Fixtures of the page tests: one headless Debian Chromium per session (Playwright drives it),
a fresh browser context per test, screenshots kept as test artifacts, and small test images.

Screenshots go to ``var/test-artifacts/web/`` (git-ignored) and to the test's ``tmp_path``; a
failing test leaves ``FAILED-<test>.png`` there too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml_service.training.synthetic import generate_sample
from tests.web.browser import LAUNCH_ARGS, BrowserUnavailable, ensure_chromium

pytest.importorskip(
    "playwright.sync_api", reason="the page tests need Playwright (pip install playwright)"
)

from playwright.sync_api import Browser, Page, Playwright, sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "web"
VIEWPORT = {"width": 1360, "height": 940}
EXPECTED_CONSOLE = ("Failed to load resource",)
"""Console errors that are not the page's: Chromium logs every 4xx answer (which the page
shows as the API's error) and every refused connection this way."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    try:
        chromium = ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    browser = playwright_session.chromium.launch(
        executable_path=str(chromium), args=LAUNCH_ARGS, headless=True
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (its own local storage); its console errors and uncaught
    exceptions are collected in ``page.problems``, which must stay empty unless a test
    expects otherwise."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, reduced_motion="reduce")
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" and not msg.text.startswith(EXPECTED_CONSOLE)
            else None
        ),
    )
    page.problems = problems  # type: ignore[attr-defined]
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        context.close()


@pytest.fixture
def screenshot(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """``screenshot(page, name)``: a full-page PNG in ``var/test-artifacts/web/`` and in the
    test's ``tmp_path``; returns the artifact's path."""

    def take(page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        (tmp_path / path.name).write_bytes(path.read_bytes())
        return path

    return take


def _png(seed: int, kind: str) -> bytes:
    sample = generate_sample(np.random.default_rng(seed), 256, kind)
    ok, buf = cv2.imencode(".png", sample.image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two synthetic 256 x 256 microscopy PNGs: cells, and rings (objects with holes)."""
    folder = tmp_path_factory.mktemp("web-images")
    paths = [folder / "cells.png", folder / "rings.png"]
    paths[0].write_bytes(_png(11, "cells"))
    paths[1].write_bytes(_png(12, "rings"))
    return paths
