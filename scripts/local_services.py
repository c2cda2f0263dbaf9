"""Make sure the real PostgreSQL and Redis of this machine run before tests use them.

``ensure_postgres()`` / ``ensure_redis()`` return at once when the server answers; otherwise
they try to start it (Debian's ``pg_ctlcluster`` for every cluster version under
``/etc/postgresql``; ``redis-server --daemonize yes``), wait for it, and raise
:class:`ServiceError` with what was tried and what it said when it still does not answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
START_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A service the tests need is not running and could not be started."""


def postgres_answers(host: str = PG_HOST, port: int = PG_PORT, user: str = PG_USER) -> bool:
    """Whether PostgreSQL accepts a connection to its ``postgres`` database now."""

    async def probe() -> None:
        conn = await asyncpg.connect(
            host=host, port=port, user=user, database="postgres", timeout=2
        )
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT) -> bool:
    """Whether Redis answers ``PING`` now."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"$ {' '.join(cmd)}: {exc}"
    return f"$ {' '.join(cmd)} -> {done.returncode}: {(done.stdout + done.stderr).strip()}"


def _wait(answers: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            return True
        time.sleep(0.3)
    return False


def ensure_postgres(timeout: float = START_TIMEOUT_S) -> None:
    """PostgreSQL answers on 127.0.0.1:5432 (user postgres), starting it if needed."""
    if postgres_answers():
        return
    conf = Path("/etc/postgresql")
    versions = sorted(os.listdir(conf)) if conf.is_dir() else []
    tried = [
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
        for version in versions
    ] or ["no cluster under /etc/postgresql"]
    if not _wait(postgres_answers, timeout):
        raise ServiceError(
            f"PostgreSQL is not answering on {PG_HOST}:{PG_PORT} and could not be started:\n"
            + "\n".join(tried)
        )


def ensure_redis(timeout: float = START_TIMEOUT_S) -> None:
    """Redis answers on 127.0.0.1:6379, starting it if needed (no persistence)."""
    if redis_answers():
        return
    tried = _run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    )
    if not _wait(redis_answers, timeout):
        raise ServiceError(
            f"Redis is not answering on {REDIS_HOST}:{REDIS_PORT} and could not be started:\n"
            + tried
        )
