"""What the leading dispatcher does to recover from crashes and restarts, within seconds.

- **A worker vanished** (its heartbeat key expired; SIGKILL, the OOM killer, a lost host): what
  it was processing, and what was released to its queue and not started, goes back to queued
  at once instead of after the broker's visibility timeout. A worker that drained (SIGTERM)
  finished its work and deleted its key: nothing of its is in work, so nothing moves.
- **The broker lost its messages** (Redis restarted without persistence; noticed because a key
  the dispatcher keeps in Redis is gone): everything released and not started goes back to
  queued at once. Workers' heartbeats are gone too; they are given a heartbeat TTL to come back
  before they count as vanished.
- **A finished job was never announced** (its ``job.done`` publish failed, or the worker died
  first): it is announced now, and marked sent only once that publish went through.

Requeueing is always safe: the image goes out again with a new dispatch number, a task holding
the old one does nothing, and results are upserted by image id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

from contracts.db import recovery
from contracts.heartbeats import HEARTBEAT_TTL_S, WorkerHeartbeat

log = logging.getLogger(__name__)

BROKER_MARK_KEY = "cellseg:broker-mark"
"""Kept in Redis by the dispatcher; gone means Redis lost its data (and the broker's messages)."""
ANNOUNCE_SETTLE_S = 5.0
"""A finished job's ``job.done`` is left to the worker that finished it for this long."""
ANNOUNCE_EVERY_S = 1.0

Announce = Callable[[str, int], Awaitable[bool]]  # (job id, owner) → published


@dataclass
class WorkerWatch:
    """The workers seen alive, to tell which vanished (pure bookkeeping, no I/O)."""

    seen: dict[str, WorkerHeartbeat] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)
    grace_until: float = 0.0

    def update(self, workers: list[WorkerHeartbeat], now: float) -> list[WorkerHeartbeat]:
        """Record the live workers; return those that vanished since the last call (each
        once). During a grace period (after a broker restart erased every heartbeat) a missing
        worker is given until the grace ends to come back."""
        for w in workers:
            self.seen[w.name] = w
            self.last_seen[w.name] = now
        live = {w.name for w in workers}
        lost = []
        for name in list(self.seen):
            if name in live or now < self.grace_until:
                continue
            lost.append(self.seen.pop(name))
            self.last_seen.pop(name, None)
        return lost

    def broker_restarted(self, now: float, ttl_s: float = HEARTBEAT_TTL_S) -> None:
        self.grace_until = now + ttl_s


class Recovery:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        queues: list[str],
        announce: Announce | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.queues = queues
        self.announce = announce
        self.watch = WorkerWatch()
        self._next_announce = 0.0
        self.requeued = 0  # images put back by this dispatcher (for tests and logs)

    async def check(self, workers: list[WorkerHeartbeat], now: float) -> None:
        """Each dispatcher round, before anything is sent: broker restart, vanished workers.

        Raises:
            redis.exceptions.RedisError: Redis is unreachable (nothing was changed).
        """
        if await self.redis.set(BROKER_MARK_KEY, "1", nx=True):
            self.watch.broker_restarted(now)
            n = await recovery.requeue_dispatched(self.pool, self.queues)
            self.requeued += n
            if n:
                log.warning("broker lost its messages: %d images not started requeued", n)
        lost = self.watch.update(workers, now)
        if not lost:
            return
        names = [w.name for w in lost]
        queues = sorted({w.queue for w in lost if not w.draining and w.queue in self.queues})
        n = await recovery.requeue_lost_workers(self.pool, names, queues)
        self.requeued += n
        log.warning("worker(s) %s vanished: %d images requeued", ", ".join(names), n)

    async def announce_unsent(self, now: float) -> None:
        """Announce finished jobs whose ``job.done`` never went out (every second at most)."""
        if self.announce is None or now < self._next_announce:
            return
        self._next_announce = now + ANNOUNCE_EVERY_S
        for row in await recovery.unannounced_jobs(self.pool, ANNOUNCE_SETTLE_S, 100):
            job_id = str(row["id"])
            if await self.announce(job_id, int(row["user_id"])):
                await recovery.mark_done_sent(self.pool, job_id)
                log.info("job %s announced by the dispatcher", job_id)
