"""Gateway test harness: a fresh PostgreSQL database per session (created, migrated, dropped),
a temp ``UPLOAD_DIR``, the real Redis (a database index of its own) and the app, its lifespan
run by Starlette's ``TestClient``. Fixtures that need no service start nothing, so pure tests
run without PostgreSQL or Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from backend.app import create_app
from contracts.heartbeats import worker_key
from contracts.settings import Settings
from scripts.local_services import ensure_redis
from tests.backend.helpers import (
    ADMIN_KEY,
    MAX_FILES,
    MAX_UPLOAD_MB,
    REDIS_URL,
    ApiUser,
    SyncDb,
    fake_model,
    migrated_database,
    new_user,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for the session, migrated, dropped at the end."""
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> SyncDb:
    return SyncDb(database_url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    ensure_redis()
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


HeartbeatWriter = Callable[..., str]


@pytest.fixture
def heartbeat(redis_client: redis.Redis) -> Iterator[HeartbeatWriter]:
    """``heartbeat(models=[...], name=None)`` writes a live worker's key; deleted after."""
    keys: list[str] = []

    def write(
        models: list[dict[str, Any]] | None = None,
        name: str | None = None,
        queue: str = "gpu0",
    ) -> str:
        name = name or f"test-worker-{secrets.token_hex(3)}"
        value = {
            "name": name,
            "queue": queue,
            "device": "cpu-2core",
            "updated_at": time.time(),
            "models": [fake_model("unet")] if models is None else models,
        }
        redis_client.set(worker_key(name), json.dumps(value), ex=60)
        keys.append(worker_key(name))
        return name

    yield write
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, upload_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        upload_dir=upload_dir,
        database_connection_pool_size=4,
        max_upload_mb=MAX_UPLOAD_MB,
        max_files_per_job=MAX_FILES,
        max_image_pixels=100_000_000,
        admin_api_key=ADMIN_KEY,
    )


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def user(client: TestClient) -> ApiUser:
    """A fresh user per test (so its job list starts empty)."""
    return new_user(client, "alice")


@pytest.fixture
def other_user(client: TestClient) -> ApiUser:
    return new_user(client, "bob")
