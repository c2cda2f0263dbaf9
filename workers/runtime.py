"""What a worker process holds: the engine, a DB pool on its own event loop, the event
publisher and the heartbeat that advertises the worker (and its batch profile) in Redis.

Heartbeat (``cellseg:worker:<name>``, TTL three intervals), read by the gateway
(:mod:`contracts.heartbeats`): device, models with their batch ceilings, batches that may run at
once, CPU-stage processes (from which the dispatcher sizes this worker's window), free memory,
tasks in flight and ``draining``. The dispatcher sends work only to queues with a live worker
that is not draining; SIGTERM (Celery's warm shutdown) sets ``draining`` at once, the worker
finishes and acks what it holds, then the key is deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import redis

from contracts.db.pool import create_pool
from contracts.events import EventPublisher
from contracts.heartbeats import METRIC_BATCHES, METRIC_IMAGES, worker_key
from contracts.settings import Settings, get_settings
from contracts.transient import with_connection
from ml_service.serving.engine import Engine
from ml_service.settings import get_settings as get_engine_settings
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings, get_worker_settings
from workers.watchdog import ConsumerWatchdog

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_RETRY_BUDGET_S = 120.0
"""How long a task keeps retrying a database call while PostgreSQL is unreachable."""


class WorkerRuntime:
    def __init__(self, settings: Settings, worker: WorkerSettings) -> None:
        self.settings = settings
        self.worker = worker
        self.engine = Engine.from_settings(get_engine_settings())
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._loop_thread.start()
        pool_settings = settings.model_copy(
            update={"database_connection_pool_size": worker.worker_db_pool_size}
        )
        self.pool: asyncpg.Pool = self.run(create_pool(pool_settings))
        self.events = EventPublisher(settings.redis_url)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.engine.stats.listeners.append(self._count_batch)
        self.metrics = WorkerMetrics(self.engine)
        if worker.worker_metrics_port:
            self.metrics.serve(worker.worker_metrics_port, self.not_ready_reason)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.draining = False
        self.watchdog: ConsumerWatchdog | None = None
        self._active = 0
        self._active_lock = threading.Lock()
        self._beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._beat.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the runtime's loop from a task thread; on timeout it is cancelled
        (never left running on a connection the caller has given up on)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def db(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        what: str = "database call",
        budget_s: float = DB_RETRY_BUDGET_S,
    ) -> T:
        """``fn(conn)`` on a pooled connection, retried on a fresh one while PostgreSQL
        restarts (:func:`contracts.transient.with_connection`)."""
        return self.run(
            with_connection(self.pool, fn, budget_s=budget_s, what=what), timeout=budget_s + 30
        )

    def _count_batch(self, model: str, size: int, seconds: float) -> None:
        try:
            self.redis.hincrby(METRIC_BATCHES, str(size), 1)
        except redis.RedisError:
            log.debug("metrics not recorded: Redis unavailable")

    def count_image(self, outcome: str) -> None:
        try:
            self.redis.hincrby(METRIC_IMAGES, outcome, 1)
        except redis.RedisError:
            log.debug("metrics not recorded: Redis unavailable")

    @contextmanager
    def task(self) -> Iterator[None]:
        """Counts a task in flight (for the heartbeat) while the block runs."""
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    @property
    def in_flight(self) -> int:
        return self._active

    def watch_consumer(self, consumer: Any) -> None:
        if self.watchdog is None and consumer is not None:
            self.watchdog = ConsumerWatchdog(
                consumer,
                self.redis,
                self.worker.worker_queue,
                lambda: self.in_flight,
                lambda: self.draining,
            )
            self.watchdog.start()

    def drain(self) -> None:
        """Stop advertising for work (SIGTERM): the next heartbeat, sent now, says draining."""
        self.draining = True
        self._wake.set()

    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "draining: finishing the tasks in flight before exit"
        if self._stop.is_set():
            return "stopped"
        return None

    def heartbeat_payload(self) -> dict[str, Any]:
        info = self.engine.describe()
        reading = self.engine.probe.read()
        return {
            "name": self.worker.worker_name,
            "queue": self.worker.worker_queue,
            "device": info["device"],
            "updated_at": time.time(),
            "draining": self.draining,
            "in_flight": self.in_flight,
            "capacity": self.worker.ml_inference_workers,
            "free_memory_bytes": reading.free,
            "batch_ceilings": {m["name"]: m["batching"].get("ceiling") for m in info["models"]},
            "batch_slots": info["batch_concurrency"],
            "cpu_stage_depth": max(1, info["cpu_workers"]),
            "models": info["models"],
            "memory": info["memory"],
            "gpus": info["gpus"],
            "startup_s": self.engine.startup_s,
        }

    def _heartbeat(self) -> None:
        key = worker_key(self.worker.worker_name)
        ttl = max(3, int(self.worker.worker_heartbeat_s * 3))
        while not self._stop.is_set():
            try:
                self.redis.set(key, json.dumps(self.heartbeat_payload()), ex=ttl)
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._wake.wait(self.worker.worker_heartbeat_s)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        if self.watchdog is not None:
            self.watchdog.stop()
        self._wake.set()
        try:
            self.redis.delete(worker_key(self.worker.worker_name))
        except redis.RedisError:
            pass
        self.engine.close()
        self.run(self.pool.close(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


_runtime: WorkerRuntime | None = None


def start_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime(get_settings(), get_worker_settings())
    return _runtime


def get_runtime() -> WorkerRuntime:
    return _runtime or start_runtime()


def get_runtime_if_started() -> WorkerRuntime | None:
    return _runtime


def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
