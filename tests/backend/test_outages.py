"""PostgreSQL or Redis going away while the gateway runs (a cut TCP proxy stands in for the
server, so the real ones stay up for everyone else): requests answer 503 JSON naming the
dependency, and recover by themselves once it is back. Start-up waits, then fails clearly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from backend.app import StartupError, connect_database, create_app
from contracts.settings import Settings
from tests.backend.helpers import ApiUser, Response, error_of, new_user
from tests.backend.proxy import TcpProxy


@pytest.fixture
def pg_proxy(settings: Settings) -> Iterator[TcpProxy]:
    parts = urlsplit(settings.database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.restore()
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy(settings: Settings) -> Iterator[TcpProxy]:
    parts = urlsplit(settings.redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.restore()
    yield proxy
    proxy.close()


def through(settings: Settings, proxy: TcpProxy, field: str) -> Settings:
    url = urlsplit(getattr(settings, field))
    return settings.model_copy(
        update={field: url._replace(netloc=f"{url.hostname}:{proxy.port}").geturl()}
    )


def eventually(get: Callable[[], Response], timeout: float = 10.0) -> Response:
    """Retry until 200; every other answer on the way must be a 503 JSON error."""
    deadline = time.monotonic() + timeout
    while True:
        r = get()
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        assert error_of(r)[0] == 503, r.text
        time.sleep(0.1)


def test_postgresql_outage(client: TestClient, settings: Settings, pg_proxy: TcpProxy) -> None:
    user: ApiUser = new_user(client, "patient")
    app = create_app(through(settings, pg_proxy, "database_url"))
    with TestClient(app) as c:

        def jobs() -> Response:
            return c.get("/api/v1/jobs", headers=user.headers)

        assert jobs().status_code == 200
        pg_proxy.cut()
        r = jobs()
        assert error_of(r) == (503, "service_unavailable")
        assert "PostgreSQL" in r.json()["error"]["message"]
        assert r.json()["error"]["dependency"] == "postgresql"
        assert r.headers["retry-after"]
        ready = c.get("/readyz")
        assert error_of(ready) == (503, "not_ready")
        assert not ready.json()["error"]["checks"]["postgresql"]["ok"]
        assert c.get("/healthz").status_code == 200  # alive, just not ready

        pg_proxy.restore()
        assert eventually(jobs).status_code == 200
        for _ in range(5):  # every pooled connection is healthy again
            assert jobs().status_code == 200


def test_redis_outage(
    client: TestClient, settings: Settings, redis_proxy: TcpProxy, user: ApiUser
) -> None:
    app = create_app(through(settings, redis_proxy, "redis_url"))
    with TestClient(app) as c:

        def models() -> Response:
            return c.get("/api/v1/models", headers=user.headers)

        assert models().status_code == 200
        redis_proxy.cut()
        started = time.monotonic()
        r = models()
        assert time.monotonic() - started < 3  # fails fast, no long retry loop
        assert error_of(r) == (503, "service_unavailable")
        assert "Redis" in r.json()["error"]["message"]
        assert c.get("/api/v1/jobs", headers=user.headers).status_code == 200  # PG-only works
        ready = c.get("/readyz")
        assert not ready.json()["error"]["checks"]["redis"]["ok"]

        redis_proxy.restore()
        assert eventually(models).status_code == 200


def test_startup_waits_for_postgresql_then_fails_clearly(settings: Settings) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)  # never listening: nothing answers on its port
    try:
        dead = through(settings, proxy, "database_url")
        started = time.monotonic()
        with pytest.raises(StartupError) as info:
            asyncio.run(connect_database(dead, timeout_s=1.0))
        assert time.monotonic() - started >= 0.5  # it retried
        assert "PostgreSQL" in str(info.value) and "not reachable" in str(info.value)
        assert "DATABASE_URL" in str(info.value)
    finally:
        proxy.close()


def test_startup_fails_at_once_for_a_missing_database(settings: Settings) -> None:
    url = urlsplit(settings.database_url)._replace(path="/cellseg_no_such_db").geturl()
    started = time.monotonic()
    with pytest.raises(StartupError) as info:
        asyncio.run(connect_database(settings.model_copy(update={"database_url": url}), 10.0))
    assert time.monotonic() - started < 5
    assert "cellseg_no_such_db" in str(info.value)
