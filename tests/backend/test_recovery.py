"""Which workers count as vanished (``backend.recovery.WorkerWatch``), and which errors mean a
dependency is restarting."""

from __future__ import annotations

import asyncpg

from backend.errors import unavailable_dependency
from backend.recovery import WorkerWatch
from contracts.heartbeats import WorkerHeartbeat
from contracts.transient import is_transient


def beat(name: str, *, draining: bool = False) -> WorkerHeartbeat:
    return WorkerHeartbeat(name, "q", "cpu", 0.0, [{"name": "m"}], draining)


def test_a_worker_whose_heartbeat_expired_is_reported_once() -> None:
    watch = WorkerWatch()
    assert watch.update([beat("a"), beat("b")], now=0.0) == []
    lost = watch.update([beat("b")], now=1.0)
    assert [w.name for w in lost] == ["a"]
    assert watch.update([beat("b")], now=2.0) == []  # reported once


def test_a_draining_worker_is_reported_with_its_last_heartbeat() -> None:
    watch = WorkerWatch()
    watch.update([beat("a", draining=True)], now=0.0)
    (lost,) = watch.update([], now=1.0)
    assert lost.draining  # the caller requeues only what it was still processing


def test_after_a_broker_restart_workers_get_a_ttl_to_come_back() -> None:
    watch = WorkerWatch()
    watch.update([beat("a"), beat("b")], now=0.0)
    watch.broker_restarted(now=10.0, ttl_s=15.0)
    assert watch.update([], now=11.0) == []  # every heartbeat is gone with the data
    assert watch.update([beat("a")], now=12.0) == []  # a is back
    assert [w.name for w in watch.update([beat("a")], now=26.0)] == ["b"]  # b never came back


def test_a_connection_caught_consuming_the_servers_shutdown_notice_is_transient() -> None:
    """PostgreSQL's fast shutdown sends every backend a FATAL notice; a connection that gets
    it between two statements is still consuming it when the next one (often the COMMIT)
    starts: asyncpg raises InternalClientError. That is a restart, not a bug: the task retries
    on a fresh connection and the gateway answers 503."""
    exc = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    assert is_transient(exc)
    assert unavailable_dependency(exc) == "PostgreSQL"
    assert unavailable_dependency(asyncpg.InternalClientError("something else")) is None
