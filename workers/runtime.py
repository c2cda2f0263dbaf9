"""What a worker process holds: the engine, a DB pool on its own event loop, the event
publisher and the heartbeat that advertises the worker (and its batch profile) in Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import redis

from backend.db.pool import create_pool
from backend.events import EventPublisher
from backend.settings import Settings, get_settings
from ml_service.engine import Engine
from ml_service.settings import get_settings as get_engine_settings
from workers.metrics import WorkerMetrics
from workers.settings import WorkerSettings, get_worker_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_KEY = "cellseg:worker:{name}"
METRIC_BATCHES = "cellseg:metrics:batch_sizes"  # hash: batch size → batches
METRIC_IMAGES = "cellseg:metrics:images"  # hash: done|failed → images


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
            self.metrics.serve(worker.worker_metrics_port)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._beat.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the runtime's loop from a task thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

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

    def heartbeat_payload(self) -> dict[str, Any]:
        info = self.engine.describe()
        return {
            "name": self.worker.worker_name,
            "queue": self.worker.worker_queue,
            "device": info["device"],
            "updated_at": time.time(),
            "models": info["models"],
            "memory": info["memory"],
            "gpus": info["gpus"],
            "startup_s": self.engine.startup_s,
        }

    def _heartbeat(self) -> None:
        key = HEARTBEAT_KEY.format(name=self.worker.worker_name)
        ttl = max(3, int(self.worker.worker_heartbeat_s * 3))
        while not self._stop.is_set():
            try:
                self.redis.set(key, json.dumps(self.heartbeat_payload()), ex=ttl)
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.worker.worker_heartbeat_s)

    def close(self) -> None:
        self._stop.set()
        try:
            self.redis.delete(HEARTBEAT_KEY.format(name=self.worker.worker_name))
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


def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
