"""End-to-end harness: a fresh database, a real gateway (uvicorn) and a real Celery worker
process on loopback, against the PostgreSQL and Redis running on this machine, or against
servers of the test's own (:mod:`tests.private_servers`) when the test restarts them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from scripts.local_services import ensure_postgres, ensure_redis

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "test-admin-" + secrets.token_hex(8)
PG_ADMIN = os.environ.get(
    "CELLSEG_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A Redis database of the suite's own (a `make run` service uses 0) and queue names of each
# session's own: the service under test and one running on the same machine never meet.
SERVICE_REDIS_URL = os.environ.get("CELLSEG_TEST_SERVICE_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """Processes of one test session and how to reach them."""

    env: dict[str, str]
    url: str
    queue: str
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_metrics_port: int = field(default_factory=lambda: free_port())
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**self.env, **(extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def start_worker(self, name: str = "worker", extra: dict[str, str] | None = None) -> None:
        """Start a worker process; the first one's metrics port is ``worker_metrics_port``."""
        port = self.worker_metrics_port if name == "worker" else free_port()
        self.metrics_ports[name] = port
        self.start(
            name,
            ["-m", "workers"],
            {
                "WORKER_NAME": f"{self.queue}-{name}-{secrets.token_hex(3)}",
                "WORKER_METRICS_PORT": str(port),
                **(extra or {}),
            },
        )

    @property
    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_metrics_port}/metrics"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(f"{self.url}/readyz", timeout=2)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.tmp / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            time.sleep(0.3)
        raise TimeoutError(f"service not ready after {timeout}s: {last!r}")

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def diagnostics(self, lines: int = 40) -> str:
        """The last lines of every process log, for failure messages."""
        out = []
        for path in sorted(self.tmp.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    def create_user(self, name: str) -> str:
        r = httpx.post(
            f"{self.url}/api/v1/users",
            json={"name": name},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["api_key"])

    def db(self, query: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.env["DATABASE_URL"])
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())


async def _admin(sql: str, dsn: str = PG_ADMIN) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def running_service(
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    *,
    workers: int = 1,
    wait: bool = True,
    redis_url: str | None = None,
    pg_admin_dsn: str | None = None,
) -> Iterator[Service]:
    """A fresh database, one gateway and ``workers`` worker processes (stopped on exit).

    ``extra_env`` overrides the defaults below (e.g. ``STORAGE_URL`` or ``DISPATCH_QUEUES``).
    ``redis_url`` and ``pg_admin_dsn`` point the service at other servers than the machine's
    (a test that restarts them passes its private ones, :mod:`tests.private_servers`).
    """
    admin = pg_admin_dsn or PG_ADMIN
    if pg_admin_dsn is None:
        ensure_postgres()
    if redis_url is None:
        ensure_redis()
    tag = secrets.token_hex(4)
    dbname = f"cellseg_e2e_{tag}"
    asyncio.run(_admin(f"CREATE DATABASE {dbname}", admin))
    port = free_port()
    queue = f"e2e{tag}"
    env = {
        **os.environ,
        "DATABASE_URL": admin.rsplit("/", 1)[0] + f"/{dbname}",
        "REDIS_URL": redis_url or SERVICE_REDIS_URL,
        "UPLOAD_DIR": str(tmp / "uploads"),
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "1",
        "ADMIN_API_KEY": ADMIN_KEY,
        "DISPATCH_QUEUES": queue,
        "DISPATCH_INTERVAL_S": "0.1",
        "TASK_TIME_LIMIT_S": "60",
        "SYNC_TIMEOUT_S": "6",
        "WORKER_QUEUE": queue,
        "WORKER_HEARTBEAT_S": "1",
        "ML_INFERENCE_WORKERS": "8",
        "ML_DEVICE": "cpu",
        "ML_MAX_QUEUE_DELAY_MS": "20",
        "ML_TORCH_THREADS": "1",
        # the service tests are about the service: workers start in seconds instead of
        # compiling the recorded configurations for 10-40 s each on these two cores
        # (tests/ml_service/test_compile_cpu.py covers compilation)
        "ML_COMPILE": "off",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    svc = Service(env, f"http://127.0.0.1:{port}", queue, tmp)
    try:
        svc.start("gateway", ["-m", "backend", "serve"])
        for i in range(workers):
            svc.start_worker("worker" if i == 0 else f"worker{i + 1}")
        if wait:
            svc.wait_ready()
        yield svc
    finally:
        for name in list(svc.procs):
            svc.stop(name)
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            asyncio.run(_admin(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)", admin))


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service")) as svc:
        yield svc
