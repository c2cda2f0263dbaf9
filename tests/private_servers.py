"""Redis and PostgreSQL servers of one test session's own, for tests that stop and restart them.

The fault tests kill and restart the broker and the database mid-job; against the machine's
shared servers (127.0.0.1:6379, :5432) that would break every other test run on the machine.
``PrivateRedis`` runs ``redis-server`` on a free port without persistence (as ``make run``
starts it: a restart loses everything); ``PrivatePostgres`` makes a cluster with ``initdb`` in a
temporary directory (trust auth) and runs it on a free port. Both restart on the same port, so
the processes under test reconnect to the same address; both are stopped (and the cluster's
directory removed) by ``close``. As root, PostgreSQL runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from scripts.local_services import postgres_answers, redis_answers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(answers: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")


class PrivateRedis:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(lambda: redis_answers(port=self.port), 30, f"private Redis on {self.port}")

    def stop(self) -> None:
        """Stop at once, losing every key (as a crash or a restart without persistence)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    close = stop


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary directory, trust auth) on
    127.0.0.1:<free port>."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cellseg-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} -> {done.returncode}: {done.stdout}{done.stderr}")

    def init(self) -> None:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            )

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "pg.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        _wait(lambda: postgres_answers(port=self.port), 30, f"private PostgreSQL on {self.port}")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_servers(workdir: Path) -> Iterator[tuple[PrivateRedis, PrivatePostgres]]:
    """A private Redis and PostgreSQL, running for the block and stopped after it."""
    redis = PrivateRedis(workdir / "redis")
    pg = PrivatePostgres()
    try:
        redis.start()
        pg.init()
        pg.start()
        yield redis, pg
    finally:
        redis.close()
        pg.close()
