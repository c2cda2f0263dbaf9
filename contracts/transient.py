"""What a restart of PostgreSQL, Redis or the blob store can raise, and a retry loop for it.

A dependency that restarts drops its connections: asyncpg raises connection errors,
``InterfaceError`` or ``InternalClientError`` (a pooled connection that got the server's
shutdown notice while idle is in the middle of consuming that error when it is next used),
sockets raise ``OSError``, redis-py its ``ConnectionError``/``TimeoutError``. All of them mean
"try again on a fresh connection", never "this image is bad".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions

from contracts.storage import StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    StorageUnavailable,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


async def with_connection(
    pool: asyncpg.Pool,
    fn: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    budget_s: float = 120.0,
    what: str = "database call",
) -> T:
    """``fn(conn)`` on a pooled connection, retried on a fresh connection (with backoff, for
    up to ``budget_s`` seconds) while it fails transiently. A connection that failed is
    terminated, never handed back to the pool for reuse in an unknown protocol state.

    Raises:
        the last transient error once the budget is spent; any other error at once.
    """
    deadline = time.monotonic() + budget_s
    delay = 0.1
    while True:
        try:
            async with pool.acquire() as conn:
                try:
                    return await fn(conn)
                except BaseException as exc:
                    if is_transient(exc) or isinstance(exc, asyncio.CancelledError):
                        conn.terminate()
                    raise
        except TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
