"""A real S3-compatible server for the tests: moto in server mode on a free loopback port.

``moto_server()`` starts ``moto_server -H 127.0.0.1 -p PORT`` (a separate process, plain HTTP
S3 API), waits until it answers and stops it on exit. Its state lives in memory: a restart
(``MotoServer.restart``) starts empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.harness import free_port

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass
class MotoServer:
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _clients: list[Any] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables that point boto3 (and so the service) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 30) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "moto.server"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited:\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return
            time.sleep(0.2)
        raise TimeoutError(f"moto_server not answering on {self.endpoint}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port (empty: moto keeps state in memory)."""
        self.stop()
        self.start()

    def client(self) -> Any:
        """A boto3 S3 client for this server (the tests' own view of the bucket)."""
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )
        self._clients.append(client)
        return client

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        """Every object name in ``bucket`` under ``prefix``."""
        client = self.client()
        names: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            names |= {obj["Key"] for obj in page.get("Contents", [])}
        return names


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for client in server._clients:
            client.close()
