"""Debian's Chromium for the page tests, driven by Playwright (no browser download, ever).

:func:`ensure_chromium` returns ``/usr/bin/chromium``, installing Debian's ``chromium`` package
with apt-get first when it is missing (so ``make test`` works on a fresh machine when run as
root); otherwise it raises :class:`BrowserUnavailable` saying what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
APT_TIMEOUT_S = 900
LAUNCH_ARGS = [
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-background-networking",  # the network is closed: no update or sync pings
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class BrowserUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed; the message says how to."""


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_S,
        check=False,
    )


def ensure_chromium(path: Path = CHROMIUM) -> Path:
    """``path`` if Chromium is there; else install Debian's ``chromium`` package and return it.

    Raises:
        BrowserUnavailable: not installed, and apt-get is missing, we are not root, or the
            install failed (its output's tail is in the message).
    """
    if path.exists():
        return path
    how = "install Debian's chromium package: apt-get update && apt-get install -y chromium"
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable(f"{path} is missing and this system has no apt-get; {how}")
    if os.geteuid() != 0:
        raise BrowserUnavailable(f"{path} is missing and only root can install it; {how}")
    outcome = _apt_get("install", "-y", "--no-install-recommends", "chromium")
    if outcome.returncode != 0:  # often a stale package index on a fresh machine
        update = _apt_get("update")
        if update.returncode == 0:
            outcome = _apt_get("install", "-y", "--no-install-recommends", "chromium")
        else:
            outcome = update
    if outcome.returncode != 0 or not path.exists():
        tail = (outcome.stdout + outcome.stderr)[-2000:]
        raise BrowserUnavailable(
            f"could not install Chromium with apt-get (exit {outcome.returncode}); {how}\n{tail}"
        )
    return path
