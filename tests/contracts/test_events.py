"""Event channels: one per Redis database, so two deployments on one Redis server (a ``make
run`` service in database 0, the tests in their own) never hear each other's events."""

from __future__ import annotations

import time

import redis

from contracts.events import CHANNEL, EventPublisher, channel_for
from scripts.local_services import ensure_redis


def test_the_channel_names_the_database() -> None:
    assert channel_for("redis://127.0.0.1:6379/14") == f"{CHANNEL}:14"
    assert channel_for("redis://127.0.0.1:6379") == channel_for("redis://h:1/") == f"{CHANNEL}:0"
    assert channel_for("rediss://user:pw@host:6380/3?ssl_cert_reqs=none") == f"{CHANNEL}:3"
    assert channel_for("unix:///run/redis.sock?db=5") == f"{CHANNEL}:5"


def test_a_publish_reaches_only_gateways_of_its_own_database() -> None:
    ensure_redis()
    other = redis.Redis.from_url("redis://127.0.0.1:6379/0").pubsub()
    other.subscribe(channel_for("redis://127.0.0.1:6379/0"))
    try:
        other.get_message(timeout=2)  # the subscribe confirmation
        publisher = EventPublisher("redis://127.0.0.1:6379/11")
        got = publisher.emit("job.done", {"job_id": "x"}, ["job:x"])
        assert got is False  # nobody listens on database 11's channel
        time.sleep(0.2)
        assert other.get_message(timeout=0.5) is None  # database 0's gateway heard nothing
    finally:
        other.close()
