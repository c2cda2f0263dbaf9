"""Fixtures of the client tests: users, folders of synthetic images, a second gateway replica
with small upload limits, and a way to run ``cellseg`` in process or as a process."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np
import pytest

from cellseg_client.cli.main import main
from ml_service.training.synthetic import generate_sample
from scripts.render_nginx import render, values_for
from tests.harness import Service, free_port
from tests.ops.system import ensure_package

ROOT = Path(__file__).resolve().parents[2]
SMALL_MAX_FILES = 4


def write_pngs(folder: Path, n: int, seed: int, prefix: str = "img") -> list[Path]:
    """``n`` synthetic 256x256 cell images as PNG files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        ok, buf = cv2.imencode(".png", generate_sample(rng, 256, "cells").image)
        assert ok
        path = folder / f"{prefix}{i:02d}.png"
        path.write_bytes(buf.tobytes())
        paths.append(path)
    return paths


def wait_healthy(
    url: str, within_s: float, probe_timeout_s: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Whether ``URL/healthz`` answers 200 within ``within_s`` seconds (False at once when
    ``alive()`` turns False: the process behind it died)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=probe_timeout_s).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not alive():
            return False
        time.sleep(0.2)


@dataclass
class User:
    name: str
    key: str


@pytest.fixture
def user(service: Service) -> User:
    name = "client-" + secrets.token_hex(4)
    return User(name, service.create_user(name))


def image_rows(service: Service, user: User) -> list[dict[str, Any]]:
    """The user's image rows on the server."""
    rows = service.db(
        "SELECT i.id, i.job_id, i.sha256, i.filename, i.status, r.objects FROM images i "
        "JOIN users u ON u.id = i.user_id LEFT JOIN results r ON r.image_id = i.id "
        "WHERE u.name = $1 ORDER BY i.job_id, i.seq",
        user.name,
    )
    return [{k: str(v) if k in ("id", "job_id") else v for k, v in r.items()} for r in rows]


@pytest.fixture(scope="session")
def small_gateway(service: Service) -> Iterator[str]:
    """A second gateway replica on the same database and Redis, allowing only
    ``SMALL_MAX_FILES`` files per job; answers its URL."""
    port = free_port()
    name = "gateway-small"
    service.start(
        name,
        ["-m", "backend", "serve"],
        {"GATEWAY_PORT": str(port), "MAX_FILES_PER_JOB": str(SMALL_MAX_FILES)},
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, within_s=60, probe_timeout_s=2):
        raise TimeoutError(f"small gateway not up:\n{service.log(name)[-2000:]}")
    try:
        yield url
    finally:
        service.stop(name)


def run_cli(url: str, key: str, *args: object) -> int:
    """``cellseg --url URL --api-key KEY ARGS...`` in this process; its exit code."""
    return main(["--url", url, "--api-key", key, *map(str, args)])


def spawn_cli(url: str, key: str, *args: object) -> subprocess.Popen[str]:
    """``python -m cellseg_client ...`` as a child process (its own session, for SIGKILL)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cellseg_client", "--url", url, "--api-key", key, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def nginx_front(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx (rendered from ``nginx/nginx.conf.template``) on a loopback port
    in front of the gateway, with a tight upload rate (1/s, burst 1, per API key)."""
    nginx = ensure_package("nginx", "nginx")
    prefix = tmp_path_factory.mktemp("nginx-client")
    port = free_port()
    conf = prefix / "nginx.conf"
    values = values_for(
        [urlparse(service.url).netloc],
        port,
        50,
        str(prefix),
        UPLOAD_RATE="1r/s",
        UPLOAD_BURST="1",
    )
    conf.write_text(render(values))
    log = prefix / "stderr.log"
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, within_s=20, probe_timeout_s=1, alive=lambda: proc.poll() is None):
        proc.kill()
        raise RuntimeError(f"nginx did not start: {log.read_text()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
