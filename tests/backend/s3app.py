"""The gateway app on an S3 blob store (a real moto server), for the storage and retention tests.

Plain context managers, not fixtures: each test module wraps them in its own module fixture.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from contracts.settings import Settings
from contracts.storage import BlobStore
from tests.s3server import REGION, MotoServer


@dataclass
class Gateway:
    """A running app (TestClient) with its blob store and the spool it streams into."""

    client: TestClient
    store: BlobStore
    spool: Path
    bucket: str = ""
    prefix: str = ""

    def spool_files(self) -> set[str]:
        return {p.name for p in self.spool.iterdir()}


@contextlib.contextmanager
def s3_gateway(
    settings: Settings,
    moto: MotoServer,
    spool: Path,
    *,
    bucket: str | None = None,
    prefix: str = "svc",
    env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """The app with ``STORAGE_URL=s3://bucket/prefix`` (a fresh bucket unless ``bucket`` is
    given; it need not exist) and ``AWS_*`` pointing at ``moto`` (``env`` overrides them)."""
    name = bucket or moto.create_bucket(f"cellseg-{secrets.token_hex(4)}")
    spool.mkdir(parents=True, exist_ok=True)
    s3_settings = settings.model_copy(
        update={
            "storage_url": f"s3://{name}/{prefix}",
            "aws_region": REGION,
            "upload_dir": spool,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**moto.env, **(env or {})}.items():
            mp.setenv(key, value)
        with TestClient(create_app(s3_settings)) as client:
            yield Gateway(client, client.app.state.store, spool, name, prefix)  # type: ignore[attr-defined]
