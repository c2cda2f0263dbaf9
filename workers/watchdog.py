"""A watchdog for a Celery consumer that silently stops consuming after Redis comes back.

Seen here with Celery/kombu 5.7 on the Redis transport (and reported upstream many times, e.g.
celery/celery#8030, #8091, #9054): after a Redis restart the consumer's socket is dropped from
the event loop without an error, the loop idles ("no sockets yet") and the worker never takes
another task, while its heartbeat thread (a separate connection) keeps it looking alive.

The watchdog reads, every ``interval`` seconds, the length of the worker's queue in Redis and the
tasks in flight. When messages wait but the worker runs nothing for ``patience`` consecutive
checks (and it is not draining), it asks the consumer's event loop to raise a connection error;
Celery then does what it does for any lost connection: reconnects and consumes again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)


class ConsumerStalled(redis.exceptions.ConnectionError):
    """Raised inside the consumer's event loop: one of the transport's connection errors, so
    Celery's consumer restarts its connection."""


class StallDetector:
    """Pure bookkeeping: is the consumer stalled, given successive observations?"""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.strikes = 0

    def observe(self, waiting: int, in_flight: int, draining: bool) -> bool:
        """True (once per stall) after ``patience`` observations in a row with messages waiting
        and nothing running."""
        if draining or waiting == 0 or in_flight > 0:
            self.strikes = 0
            return False
        self.strikes += 1
        if self.strikes >= self.patience:
            self.strikes = 0
            return True
        return False


class ConsumerWatchdog:
    """Runs :class:`StallDetector` in a daemon thread against one Celery consumer."""

    def __init__(
        self,
        consumer: Any,
        client: redis.Redis,
        queue: str,
        in_flight: Callable[[], int],
        draining: Callable[[], bool],
        *,
        interval: float = 5.0,
        patience: int = 3,
    ) -> None:
        self.consumer = consumer
        self.client = client
        self.queue = queue
        self.in_flight = in_flight
        self.draining = draining
        self.interval = interval
        self.detector = StallDetector(patience)
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                waiting = int(self.client.llen(self.queue))
            except redis.RedisError:
                continue  # Redis is down: the consumer notices that by itself
            if self.detector.observe(waiting, self.in_flight(), self.draining()):
                self.kick()

    def kick(self) -> None:
        hub = getattr(self.consumer, "hub", None)
        if hub is None:
            log.error("consumer stalled with %s queued and no event loop to restart", self.queue)
            return
        self.restarts += 1
        log.warning(
            "consumer stalled: messages wait in %s but none is taken; reconnecting", self.queue
        )

        def lost() -> None:
            raise ConsumerStalled("consumer stalled: reconnecting to the broker")

        hub.call_soon(lost)
