"""The dispatcher: releases queued images to Celery fairly, one active in the whole service.

Every gateway replica runs one; the one that holds a PostgreSQL advisory lock (on a dedicated
connection) is the leader, the others try to take it every few ticks, so when the leader's
process dies (its connection closes and PostgreSQL frees the lock) another replica leads within
about a second. Each tick it reads the workers' heartbeats (:mod:`contracts.heartbeats`) and
computes free capacity per device queue (the window of each worker taking work there, about two
full batches of what it can run, :func:`backend.fairness.worker_window`, or
``DISPATCH_IN_FLIGHT_PER_QUEUE`` per worker when set; minus images dispatched or processing
there; a queue with no such worker, e.g. its only worker drains after SIGTERM, gets nothing),
picks that many queued images by deficit round robin over users, marks them dispatched
(``FOR UPDATE SKIP LOCKED``) and sends one Celery task each, carrying the image's dispatch
number, inside one transaction: if Redis refuses a send, the images stay queued. The dispatcher
never touches a GPU or an image's bytes. Before each round it recovers what a vanished worker
or a broker restart left behind and announces finished jobs whose ``job.done`` was lost
(:mod:`backend.recovery`). Work released to a queue that has had no live worker at all for
``DISPATCH_ORPHAN_GRACE_S`` goes back to queued, to be dispatched elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import redis.asyncio as aioredis
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from backend.fairness import drr_pick, worker_window
from backend.recovery import Announce, Recovery
from contracts.db import work
from contracts.heartbeats import WorkerHeartbeat, live_workers
from contracts.requests import TASK_SEGMENT
from contracts.settings import Settings

log = logging.getLogger(__name__)

LEADER_LOCK = 0x43534450  # "CSDP"
WORKERS_REFRESH_S = 0.5


def make_sender(settings: Settings) -> Celery:
    """A send-only Celery client (the gateway never imports the workers)."""
    app = Celery("cellseg-gateway", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    )
    return app


def queue_windows(workers: list[WorkerHeartbeat], override: int | None) -> dict[str, int]:
    """Images each queue may hold released: the sum of the windows of the workers taking work
    there (:func:`backend.fairness.worker_window`)."""
    out: dict[str, int] = {}
    for w in workers:
        if w.serving and w.queue:
            out[w.queue] = out.get(w.queue, 0) + worker_window(w, override)
    return out


def free_capacity(
    queues: list[str], windows: dict[str, int], in_flight: dict[str, int]
) -> dict[str, int]:
    """Images each queue may take now: its window minus what is dispatched or processing
    there (never negative; 0 for a queue nobody serves)."""
    return {q: max(0, windows.get(q, 0) - in_flight.get(q, 0)) for q in queues}


def assign_queues(free: dict[str, int], n: int) -> list[str]:
    """Queue for each of ``n`` images: always the queue with the most free capacity."""
    free = dict(free)
    out = []
    for _ in range(n):
        q = max(free, key=lambda k: free[k])
        out.append(q)
        free[q] -= 1
    return out


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        sender: Celery,
        redis: aioredis.Redis,
        announce: Announce | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.sender = sender
        self.redis = redis
        self.recovery = Recovery(pool, redis, settings.queues, announce)
        self._last_alive: dict[str, float] = {}  # queue → last time a live worker was seen
        self._workers: tuple[float, list[WorkerHeartbeat]] | None = None  # (read at, workers)
        self.is_leader = False
        self.dispatched = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Called after a job is created or cancelled: dispatch now, not at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: become leader, dispatch while leader; reconnect on failure."""
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.settings.database_url, timeout=5)
                while not self._stopping.is_set():
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                        break
                    await self._sleep(self.settings.dispatch_interval_s * 5)
                else:
                    return
                self.is_leader = True
                log.info("dispatcher: leader")
                await self._lead(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("dispatcher: %s; retrying", exc)
            except Exception:  # the dispatcher must outlive any single failure
                log.exception("dispatcher: unexpected error; retrying")
            finally:
                self.is_leader = False
                if conn is not None:
                    conn.terminate()
            await self._sleep(1.0)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._last_alive = {q: started for q in self.settings.queues}
        while not self._stopping.is_set():
            await conn.fetchval("SELECT 1")  # leadership lives as long as this connection
            if loop.time() >= next_sweep:
                await self.requeue_stale()
                next_sweep = loop.time() + min(30.0, self.settings.visibility_timeout_s / 2)
            try:
                workers = await self._live_workers()
                await self.recovery.check(workers, loop.time())
                await self.requeue_orphaned(workers)
                sent = await self.tick(workers)
                await self.recovery.announce_unsent(loop.time())
            except (OSError, BrokerError, RedisError) as exc:  # Redis down: nothing was sent
                log.warning("dispatcher: broker unavailable (%s)", exc)
                sent = 0
            if not sent:
                await self._sleep(self.settings.dispatch_interval_s)

    async def _live_workers(self) -> list[WorkerHeartbeat]:
        """The workers' heartbeats, read from Redis at most every :data:`WORKERS_REFRESH_S`
        (a busy dispatcher ticks back to back; heartbeats change every few seconds, and a
        draining worker's at once, so half a second of staleness is the most it costs)."""
        now = asyncio.get_running_loop().time()
        if self._workers is None or now - self._workers[0] >= WORKERS_REFRESH_S:
            self._workers = (now, await live_workers(self.redis, queues=self.settings.queues))
        return self._workers[1]

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def tick(self, workers: list[WorkerHeartbeat]) -> int:
        """One dispatch round given the live workers; returns the number of images sent."""
        windows = queue_windows(workers, self.settings.dispatch_in_flight_per_queue)
        async with self.pool.acquire() as conn, conn.transaction():
            in_flight = await work.in_flight_by_queue(conn)
            free = free_capacity(self.settings.queues, windows, in_flight)
            capacity = sum(free.values())
            if capacity == 0:
                return 0
            heads = await work.queued_heads(conn, per_user=capacity)
            if not heads:
                return 0
            deficits, order = await work.load_drr_state(conn)
            picked = drr_pick(heads, deficits, order, capacity)
            targets = assign_queues(free, len(picked.picked))
            by_queue: dict[str, list[str]] = {}
            for (_, image_id), q in zip(picked.picked, targets, strict=True):
                by_queue.setdefault(q, []).append(image_id)
            sends: list[tuple[str, str, int]] = []
            for q, ids in by_queue.items():
                sends += [(q, i, n) for i, n in await work.claim_for_dispatch(conn, ids, q)]
            await asyncio.to_thread(self._send, sends)
            await work.save_drr_state(conn, picked.deficits, picked.order)
        self.dispatched += len(sends)
        return len(sends)

    def _send(self, sends: list[tuple[str, str, int]]) -> None:
        for queue, image_id, dispatch in sends:
            self.sender.send_task(
                TASK_SEGMENT,
                args=[image_id, dispatch],
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
            )

    async def requeue_orphaned(self, workers: list[WorkerHeartbeat]) -> None:
        """Requeue what was released to queues without any live worker (even a draining one)
        for ``DISPATCH_ORPHAN_GRACE_S``."""
        now = asyncio.get_running_loop().time()
        for w in workers:
            self._last_alive[w.queue] = now
        grace = self.settings.dispatch_orphan_grace_s
        orphans = [q for q, seen in self._last_alive.items() if now - seen > grace]
        if not orphans:
            return
        n = await work.requeue_orphaned(self.pool, orphans)
        for q in orphans:  # checked again after another grace period
            self._last_alive[q] = now
        if n:
            log.warning(
                "dispatcher: %d images of queue(s) %s without a live worker requeued",
                n,
                ", ".join(orphans),
            )

    async def requeue_stale(self) -> None:
        visibility = self.settings.visibility_timeout_s
        n = await work.requeue_stale(
            self.pool, visibility, self.settings.task_time_limit_s + visibility
        )
        if n:
            log.warning("dispatcher: %d images whose task was lost requeued", n)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
