"""Debian packages the ops tests need, installed on first use (the tests run as root here)."""

from __future__ import annotations

import shutil
import subprocess


def ensure_package(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian's ``package`` with apt-get when it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found:
        return found
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and cmd[1] == "install":
            raise RuntimeError(f"cannot install {package}: {done.stderr[-2000:]}")
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        raise RuntimeError(f"{package} installed but {binary} not found")
    return found
