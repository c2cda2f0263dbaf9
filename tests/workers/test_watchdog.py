"""The consumer watchdog: a stalled consumer (messages wait, nothing runs) is kicked once per
stall, and the kick reaches the consumer's event loop as a broker connection error."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
import redis

from scripts.local_services import ensure_redis
from tests.harness import SERVICE_REDIS_URL
from workers.watchdog import ConsumerStalled, ConsumerWatchdog, StallDetector


def test_detector_needs_patience_and_resets_on_progress() -> None:
    d = StallDetector(patience=3)
    assert [d.observe(5, 0, False) for _ in range(2)] == [False, False]
    assert d.observe(5, 1, False) is False  # something runs: not stalled
    assert [d.observe(5, 0, False) for _ in range(3)] == [False, False, True]
    assert d.observe(5, 0, False) is False  # once per stall, then counts again


@pytest.mark.parametrize(("waiting", "in_flight", "draining"), [(0, 0, False), (3, 0, True)])
def test_an_empty_queue_or_a_draining_worker_is_never_stalled(
    waiting: int, in_flight: int, draining: bool
) -> None:
    d = StallDetector(patience=1)
    assert not any(d.observe(waiting, in_flight, draining) for _ in range(5))


class FakeHub:
    """Stands in for kombu's Hub: records what the watchdog schedules on the loop."""

    def __init__(self) -> None:
        self.scheduled: deque[Callable[[], None]] = deque()

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.scheduled.append(fn)


class FakeConsumer:
    def __init__(self) -> None:
        self.hub = FakeHub()


def test_watchdog_kicks_a_consumer_whose_queue_waits_in_real_redis() -> None:
    ensure_redis()
    client = redis.Redis.from_url(SERVICE_REDIS_URL)
    queue = f"watchdog-test-{time.monotonic_ns()}"
    client.rpush(queue, b"message")
    consumer: Any = FakeConsumer()
    dog = ConsumerWatchdog(
        consumer, client, queue, lambda: 0, lambda: False, interval=0.05, patience=2
    )
    try:
        dog.start()
        deadline = time.monotonic() + 5
        while not consumer.hub.scheduled and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        dog.stop()
        client.delete(queue)
    assert dog.restarts >= 1
    with pytest.raises(ConsumerStalled) as raised:
        consumer.hub.scheduled[0]()
    assert isinstance(raised.value, redis.exceptions.ConnectionError)  # Celery reconnects
