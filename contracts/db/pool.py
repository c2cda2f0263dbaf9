"""The gateway's asyncpg pool, and a separate probe connection for /readyz.

Pool connections decode ``json``/``jsonb`` columns to Python objects (and encode Python objects
given for them). A connection the server dropped (restart, ``pg_terminate_backend``) is noticed
by asyncpg when it is next acquired and replaced by a fresh one, so the pool heals by itself once
PostgreSQL is back; the request that hit the dead connection answers 503 (see
:mod:`backend.errors`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import orjson

from contracts.settings import Settings

CONNECT_TIMEOUT_S = 5.0
"""Timeout of one connection attempt (also bounds a request that finds PostgreSQL down)."""

COMMAND_TIMEOUT_S = 60.0
"""Default timeout of one statement run through the pool."""


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without credentials, for messages and logs."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"{host}:{port}{parts.path or '/'}"


def encode_json(value: object) -> str:
    """JSON text of a value for a json/jsonb parameter. orjson: a worker encodes each image's
    result, GeoJSON and COCO (~50 KB for a 256-px image of ~20 cells) under the GIL, in
    0.32 ms instead of ``json.dumps``'s 1.4 ms (same JSON); non-string keys become strings as
    ``json.dumps`` makes them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON codecs so jsonb columns come back as Python objects."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=encode_json, decoder=orjson.loads
        )


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Open the gateway's pool: 1 to ``DATABASE_CONNECTION_POOL_SIZE`` connections.

    Raises:
        OSError, asyncpg.PostgresError: PostgreSQL cannot be reached (the caller retries).
    """
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=settings.database_connection_pool_size,
        init=init_connection,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
        max_inactive_connection_lifetime=300.0,
    )
    if pool is None:  # pragma: no cover - asyncpg returns None only for non-awaited pools
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool


class ProbeConnection:
    """One dedicated connection for readiness checks, so /readyz never queues behind a busy
    pool. Reconnects on demand; every call is bounded by ``timeout``."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def ping(self, timeout: float = 1.0) -> None:
        """Run ``SELECT 1``; raise on failure or after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            async with self._lock:
                try:
                    if self._conn is None or self._conn.is_closed():
                        self._conn = await asyncpg.connect(self._dsn, timeout=timeout)
                    await self._conn.fetchval("SELECT 1")
                except BaseException:  # incl. cancellation: the connection state is unknown
                    self._drop()
                    raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=1.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close gracefully, or terminate the connections after ``timeout`` seconds."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()
