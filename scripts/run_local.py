"""``make run``: the whole service on this machine, from nothing.

Starts PostgreSQL and Redis if they are not running, creates the database, migrates, creates a
demo user, starts the gateway (with its dispatcher and Socket.IO) and one worker, waits until
``/readyz`` answers, and prints the demo user's API key and curl lines. Ctrl-C stops both. The
key is kept in ``var/demo-api-key-<database>``: a restart prints the same user's key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import cv2
import httpx

from ml_service.tools.demo import sample_png
from scripts.local_services import ensure_postgres, ensure_redis

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("run")


async def ensure_database(url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?")[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)
    finally:
        await conn.close()


def port_taken(port: int) -> bool:
    """Whether something already listens on ``127.0.0.1:port`` (another service's gateway would
    answer our readiness checks while ours fails to bind)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def worker_metrics_port(env: dict[str, str], default: int = 9101) -> str:
    """``WORKER_METRICS_PORT`` as set, else ``default``, else (``default`` taken by another
    process on this machine) a free port: the worker would stop at start-up on a port in use."""
    if "WORKER_METRICS_PORT" in env:
        return env["WORKER_METRICS_PORT"]
    if not port_taken(default):
        return str(default)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    log.info("port %d is taken: the worker's metrics listen on %s", default, port)
    return port


def demo_key(saved: Path, valid: Callable[[str], bool], create: Callable[[], str]) -> str:
    """The demo user's API key: the one ``saved`` by an earlier start while the service still
    takes it (same user, so its jobs stay listed), else a new user's, saved (mode 600)."""
    if saved.exists():
        key = saved.read_text().strip()
        if key and valid(key):
            return key
    key = create()
    saved.write_text(key + "\n")
    saved.chmod(0o600)
    return key


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per /readyz poll
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/cellseg")
    env.setdefault("UPLOAD_DIR", str(ROOT / "var" / "uploads"))
    env.setdefault("ML_DEVICE", "auto")
    port = env.setdefault("GATEWAY_PORT", "8000")
    env["WORKER_METRICS_PORT"] = worker_metrics_port(env)
    url = f"http://127.0.0.1:{port}"
    if port_taken(int(port)):
        log.error("port %s is in use (another make run?): set GATEWAY_PORT to a free port", port)
        return 1
    ensure_postgres()
    ensure_redis()
    asyncio.run(ensure_database(env["DATABASE_URL"]))
    py = sys.executable
    subprocess.run([py, "-m", "backend", "migrate"], env=env, check=True, cwd=ROOT)
    logs = ROOT / "var"
    logs.mkdir(exist_ok=True)
    sample = logs / "sample.png"
    sample.write_bytes(sample_png())
    procs = {
        name: subprocess.Popen(
            [py, "-m", module, *extra],
            env=env,
            cwd=ROOT,
            stdout=(logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, module, extra in (("gateway", "backend", ["serve"]), ("worker", "workers", []))
    }

    def stop(*_: object) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def on_sigterm(*_: object) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    log.error("%s exited (%s); see var/%s.log", name, proc.returncode, name)
                    stop()
                    return 1
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            log.error("not ready after 180 s; see var/gateway.log and var/worker.log")
            stop()
            return 1
        database = env["DATABASE_URL"].rsplit("/", 1)[-1].split("?")[0]

        def accepted(candidate: str) -> bool:
            auth = {"Authorization": f"Bearer {candidate}"}
            return httpx.get(f"{url}/api/v1/jobs?limit=1", headers=auth, timeout=10).is_success

        def create() -> str:
            made = subprocess.run(
                [py, "-m", "backend", "create-user", "demo"],
                env=env,
                check=True,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            return made.stdout.strip()

        key = demo_key(logs / f"demo-api-key-{database}", accepted, create)
        auth = f'-H "Authorization: Bearer {key}"'
        sys.stdout.write(
            f"\nCellSeg Serve is up at {url} (logs: var/gateway.log, var/worker.log)\n"
            f"demo user API key: {key}\n\n"
            f"  curl {auth} -F files=@{sample} -F model=hrnet {url}/api/v1/jobs\n"
            f"  curl {auth} {url}/api/v1/jobs/<job id>\n"
            f'  curl {auth} "{url}/api/v1/jobs/<job id>/results?format=geojson"\n\n'
            "Ctrl-C stops the service.\n"
        )
        sys.stdout.flush()
        while all(p.poll() is None for p in procs.values()):
            time.sleep(1)
        log.error("a service process exited; stopping")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(main())
