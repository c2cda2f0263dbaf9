"""The FastAPI application: ``create_app()`` wires settings, lifespan, routers and errors.

``lifespan`` opens the asyncpg pool (retrying while PostgreSQL starts, for up to
:data:`STARTUP_TIMEOUT_S`), applies migrations under their advisory lock, creates the Redis
client and the readiness probe, and stores them on ``app.state``
(``settings``, ``pool``, ``redis``, ``db_probe``, and ``store``: the blob store of uploads and
masks, ``STORAGE_URL``). Redis is not required to start: it is connected lazily, and requests
needing it answer 503 until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from backend.errors import install_error_handlers, unavailable_dependency
from backend.routes import health, jobs, models, results, segment, users, web, workers
from backend.schemas.jobs import document_file_limit
from backend.uploads import sweep_stale_temps
from contracts.db.migrate import apply_migrations
from contracts.db.pool import ProbeConnection, close_pool, create_pool, describe_dsn
from contracts.settings import Settings, get_settings
from contracts.storage import open_store

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
STARTUP_TIMEOUT_S = 30.0
"""How long start-up waits for PostgreSQL before failing."""


class StartupError(RuntimeError):
    """The gateway cannot start; the message says why and what to check."""


def create_redis(settings: Settings) -> aioredis.Redis:
    """Redis client with short timeouts and one quick retry, so a request finding Redis down
    answers 503 at once instead of retrying for seconds."""
    client: aioredis.Redis = aioredis.from_url(
        settings.redis_url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        health_check_interval=30,
    )
    return client


async def connect_database(
    settings: Settings, timeout_s: float = STARTUP_TIMEOUT_S
) -> asyncpg.Pool:
    """Create the pool, retrying connection failures for ``timeout_s`` seconds.

    Raises:
        StartupError: PostgreSQL stayed unreachable, or refused us for another reason
            (unknown database, bad credentials): not retried.
    """
    where = describe_dsn(settings.database_url)
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    while True:
        try:
            return await create_pool(settings)
        except Exception as exc:  # classified below; anything else is not retried
            if unavailable_dependency(exc) != "PostgreSQL":
                raise StartupError(
                    f"cannot use PostgreSQL at {where} (DATABASE_URL): {exc}"
                ) from exc
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"PostgreSQL at {where} (DATABASE_URL) is not reachable after "
                    f"{timeout_s:g} s: {exc or type(exc).__name__}"
                ) from exc
            log.warning("PostgreSQL at %s not reachable yet (%s); retrying", where, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    swept = sweep_stale_temps(settings.upload_dir)
    if swept:
        log.info("removed %d stale temp upload(s) from %s", swept, settings.upload_dir)
    store = open_store(settings.storage_location, region=settings.aws_region)
    app.state.store = store
    pool = await connect_database(settings)
    redis_client: aioredis.Redis | None = None
    probe = ProbeConnection(settings.database_url)
    try:
        async with pool.acquire() as conn:
            applied = await apply_migrations(conn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        redis_client = create_redis(settings)
        app.state.pool = pool
        app.state.redis = redis_client
        app.state.db_probe = probe
        yield
    finally:
        await probe.close()
        if redis_client is not None:
            await redis_client.aclose()
        await close_pool(pool)
        store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway's ASGI app (uvicorn factory ``backend.app:create_app``)."""
    app = FastAPI(
        title="CellSeg Serve",
        version="1.0",
        summary="Multi-user cell-segmentation inference service",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    # optional hooks, set by the dispatcher/Socket.IO layer (see backend/routes/jobs.py)
    app.state.on_job_created = None
    app.state.on_images_cancelled = None
    app.state.on_job_finished = None
    install_error_handlers(app)
    app.include_router(health.router)  # probes keep their root paths, and live under the API too
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(web.router)
    for router in (
        users.router,
        models.router,
        jobs.router,
        results.router,
        segment.router,
        workers.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    _document_settings(app)
    return app


def _document_settings(app: FastAPI) -> None:
    """Let the generated OpenAPI schema state the limits that come from settings."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_file_limit(generate(), app.state.settings.max_files_per_job)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
