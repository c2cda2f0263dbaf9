"""The Chromium helper: found where it is; a clear message where it cannot be installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web import browser
from tests.web.browser import BrowserUnavailable, ensure_chromium


def test_an_installed_browser_is_used_as_it_is(tmp_path: Path) -> None:
    exe = tmp_path / "chromium"
    exe.write_text("")
    assert ensure_chromium(exe) == exe


def test_without_apt_get_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(BrowserUnavailable, match="apt-get install -y chromium"):
        ensure_chromium(tmp_path / "missing-chromium")


def test_a_failed_install_reports_apt_gets_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_apt_get(*args: str) -> browser.subprocess.CompletedProcess[str]:
        calls.append(args)
        return browser.subprocess.CompletedProcess(args, 100, "", "E: Unable to locate package")

    monkeypatch.setattr(browser.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    monkeypatch.setattr(browser, "_apt_get", fake_apt_get)
    with pytest.raises(BrowserUnavailable, match="Unable to locate package"):
        ensure_chromium(tmp_path / "missing-chromium")
    assert [c[0] for c in calls] == ["install", "update"]
