"""``/healthz`` (the process answers) and ``/readyz`` (it can do useful work).

Both are fast and never wait behind requests: /readyz uses its own PostgreSQL connection (not
the pool) and bounds every check by :data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request

from backend.errors import ServiceUnavailable
from backend.schemas.errors import ERROR_RESPONSES
from backend.schemas.health import Alive, Ready
from contracts.heartbeats import live_workers

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)

CHECK_TIMEOUT_S = 1.0


@router.get("/healthz")
async def healthz() -> Alive:
    """The process is alive; touches no dependency."""
    return Alive()


async def _check(probe: Awaitable[str]) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return {"ok": True, "detail": await probe}
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # any failure is the check's answer, reported not raised
        return {"ok": False, "detail": str(exc) or type(exc).__name__}


async def _postgresql(request: Request) -> str:
    await request.app.state.db_probe.ping(CHECK_TIMEOUT_S)
    return "SELECT 1 answered"


async def _redis(request: Request) -> str:
    await request.app.state.redis.ping()
    return "PING answered"


async def _workers(request: Request) -> str:
    workers = [w for w in await live_workers(
            request.app.state.redis, queues=request.app.state.settings.queues
        ) if w.serving]
    if not workers:
        raise LookupError(
            "no live worker taking work (no heartbeat in Redis with a loaded model that is "
            "not draining)"
        )
    names = ", ".join(w.name for w in workers[:10])
    return f"{len(workers)} live worker(s): {names}"


@router.get("/readyz")
async def readyz(request: Request) -> Ready:
    """Ready when PostgreSQL answers ``SELECT 1``, Redis answers ``PING`` and at least one
    worker with a loaded model has a live heartbeat and is not draining; 503 ``not_ready``
    naming what failed."""
    pg, rd, wk = await asyncio.gather(
        _check(_postgresql(request)), _check(_redis(request)), _check(_workers(request))
    )
    checks = {"postgresql": pg, "redis": rd, "workers": wk}
    failed = [name for name, result in checks.items() if not result["ok"]]
    if failed:
        raise ServiceUnavailable(
            "not_ready",
            "not ready: " + "; ".join(f"{n}: {checks[n]['detail']}" for n in failed),
            details={"checks": checks},
        )
    return Ready.model_validate({"checks": checks})
