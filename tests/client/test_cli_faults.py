"""``cellseg segment`` through faults: Redis stopped (503) and a rate limit (429).

The Redis test stops Redis: it runs against a service on servers of its own
(:mod:`tests.private_servers`), never the machine's shared ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import User, image_rows, run_cli, write_pngs
from tests.client.stub import Proxy, ServerThread
from tests.harness import Service, running_service
from tests.private_servers import PrivateRedis, private_servers

pytestmark = pytest.mark.slow  # restarts private Redis and PostgreSQL servers


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, PrivateRedis]]:
    tmp = tmp_path_factory.mktemp("cli-faults")
    with private_servers(tmp) as (redis, pg):
        with running_service(tmp, redis_url=redis.url, pg_admin_dsn=pg.admin_dsn) as svc:
            yield svc, redis


def test_a_run_started_while_redis_is_down_completes_once_it_is_back(
    private: tuple[Service, PrivateRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, redis = private
    user = User("cli-redis", service.create_user("cli-redis"))
    src = write_pngs(tmp_path / "src", 3, seed=4)[0].parent
    out = tmp_path / "out"
    codes: list[int] = []
    args = ["segment", src, "--model", "hrnet", "--out", out, "--poll-interval", "0.5", "-q"]
    run = threading.Thread(target=lambda: codes.append(run_cli(service.url, user.key, *args)))
    redis.stop()
    try:
        run.start()
        deadline = time.monotonic() + 20
        while "503" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        redis.start()
    run.join(timeout=240)
    assert codes == [0]
    assert "503 service_unavailable; retry" in caplog.text
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 3
    assert len(image_rows(service, user)) == 3


def test_nginx_rate_limit_429s_are_retried_and_the_run_completes(
    service: Service, nginx_front: str, user: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_pngs(tmp_path / "src", 4, seed=9)[0].parent
    out = tmp_path / "out"
    code = run_cli(
        nginx_front,
        user.key,
        "segment",
        src,
        "--model",
        "hrnet",
        "--out",
        out,
        "--max-files-per-job",
        "1",
        "--concurrency",
        "4",
        "-q",
    )
    assert code == 0
    assert "429 rate_limited; retry" in caplog.text  # 4 uploads at once, 1/s burst 1
    rows = image_rows(service, user)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}


def test_a_rate_limited_run_is_retried_and_completes_by_polling(
    service: Service, user: User, tmp_path: Path
) -> None:
    src = write_pngs(tmp_path / "src", 4, seed=5)[0].parent
    out = tmp_path / "out"
    limiter = Proxy(service.url, per_second=2)
    with ServerThread(limiter) as proxy:
        code = run_cli(
            proxy.url,
            user.key,
            "segment",
            src,
            "--model",
            "unet",
            "--out",
            out,
            "--max-files-per-job",
            "1",
            "--poll-interval",
            "0.3",
            "-q",
        )
    assert code == 0
    assert limiter.rejected > 0
    rows = image_rows(service, user)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
