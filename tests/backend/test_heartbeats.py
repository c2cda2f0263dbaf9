"""Worker heartbeats as the gateway reads them, and the dispatcher's capacity from them."""

from __future__ import annotations

import json

from backend.dispatcher import assign_queues, free_capacity, queue_windows
from contracts.heartbeats import WorkerHeartbeat, parse_heartbeat, serving_queues

MODEL = {"name": "hrnet", "variant": "small", "backend": "torch", "input_size": [256, 256]}


def beat(**fields: object) -> bytes:
    return json.dumps({"name": "w1", "queue": "gpu0", "models": [MODEL], **fields}).encode()


def test_a_full_heartbeat_is_read_and_shown_to_admins() -> None:
    hb = parse_heartbeat(
        beat(
            device="cpu-2core",
            updated_at=1.5,
            draining=False,
            in_flight=3,
            capacity=8,
            free_memory_bytes=1024,
            batch_ceilings={"hrnet": 4},
            memory={"capacity_mb": 1.0},
        )
    )
    assert hb is not None and hb.serving
    view = hb.to_json()
    assert view["in_flight"] == 3 and view["capacity"] == 8
    assert view["batch_ceilings"] == {"hrnet": 4} and view["free_memory_bytes"] == 1024
    assert view["models"] == [MODEL] and view["memory"] == {"capacity_mb": 1.0}


def test_an_older_heartbeat_without_the_new_fields_still_counts() -> None:
    hb = parse_heartbeat(beat())
    assert hb is not None and hb.serving
    assert (hb.in_flight, hb.capacity, hb.free_memory_bytes, hb.batch_ceilings) == (0, 0, None, {})


def test_malformed_heartbeats_are_skipped() -> None:
    assert parse_heartbeat(b"not json") is None
    assert parse_heartbeat(json.dumps({"queue": "gpu0"})) is None  # no name
    assert parse_heartbeat(beat(in_flight="many")) is None
    assert parse_heartbeat(beat(batch_ceilings=[4])) is None
    assert parse_heartbeat(beat(free_memory_bytes="lots")) is None


def test_only_workers_taking_work_count_for_their_queue() -> None:
    def worker(name: str, queue: str, *, draining: bool = False, models: bool = True) -> object:
        return WorkerHeartbeat(name, queue, "cpu", 0.0, [MODEL] if models else [], draining)

    workers = [
        worker("a", "gpu0"),
        worker("b", "gpu0"),
        worker("c", "gpu1", draining=True),  # SIGTERM: finishing, takes nothing new
        worker("d", "gpu2", models=False),  # still loading
    ]
    serving = serving_queues(workers)  # type: ignore[arg-type]
    assert serving == {"gpu0": 2}
    windows = queue_windows(workers, 4)  # type: ignore[arg-type]
    assert windows == {"gpu0": 8}
    free = free_capacity(["gpu0", "gpu1", "gpu2"], windows, {"gpu0": 5, "gpu1": 3})
    assert free == {"gpu0": 3, "gpu1": 0, "gpu2": 0}
    assert free_capacity(["gpu0"], {"gpu0": 4}, {"gpu0": 9}) == {"gpu0": 0}  # over: 0
    assert assign_queues({"gpu0": 3, "gpu1": 1}, 4).count("gpu0") == 3
