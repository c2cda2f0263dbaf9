from __future__ import annotations

import json

from backend.dispatcher import assign_queues
from backend.fairness import drr_pick, worker_window
from contracts.heartbeats import WorkerHeartbeat, parse_heartbeat


def test_one_image_job_behind_a_big_job_goes_out_in_the_first_round() -> None:
    queued = {1: [f"big{i}" for i in range(500)], 2: ["small0"]}
    res = drr_pick(queued, {}, [1], capacity=4)
    assert "small0" in [item for _, item in res.picked]
    assert len(res.picked) == 4


def test_round_robin_interleaves_users_with_equal_shares() -> None:
    queued = {1: ["a1", "a2", "a3"], 2: ["b1", "b2", "b3"], 3: ["c1"]}
    res = drr_pick(queued, {}, [], capacity=6)
    assert [item for _, item in res.picked] == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_rotation_carries_over_between_calls() -> None:
    queued = {1: ["a1", "a2"], 2: ["b1", "b2"]}
    first = drr_pick(queued, {}, [], capacity=1)
    assert first.picked == [(1, "a1")]
    second = drr_pick({1: ["a2"], 2: ["b1", "b2"]}, first.deficits, first.order, capacity=1)
    assert second.picked == [(2, "b1")]  # user 2's turn, not user 1 again


def test_emptied_user_loses_its_deficit_and_capacity_is_respected() -> None:
    res = drr_pick({1: ["a1"], 2: ["b1", "b2", "b3"]}, {1: 5.0}, [1, 2], capacity=3)
    assert len(res.picked) == 3
    assert res.deficits[1] == 0.0
    assert drr_pick({}, {}, [], capacity=5).picked == []
    assert drr_pick({1: ["a"]}, {}, [], capacity=0).picked == []


def test_queues_filled_by_free_capacity() -> None:
    assert sorted(assign_queues({"gpu0": 3, "gpu1": 1}, 4)) == ["gpu0", "gpu0", "gpu0", "gpu1"]
    assert assign_queues({"gpu0": 2, "gpu1": 2}, 2).count("gpu0") == 1


def test_a_newcomer_goes_out_with_the_next_free_slot() -> None:
    res = drr_pick({1: ["a5", "a6"], 2: ["small"]}, {1: 0.0}, [1], capacity=1)
    assert res.picked == [(2, "small")]


def beat(**fields: object) -> WorkerHeartbeat:
    return WorkerHeartbeat("w", "q", "dev", 0.0, **fields)  # type: ignore[arg-type]


def test_window_of_a_cpu_worker_is_about_two_batches() -> None:
    # a 2-core CPU: ceilings 1-2, one batch at a time, one CPU-stage process
    cpu = beat(batch_ceilings={"cbam_resunet": 1, "hrnet": 2}, batch_slots=1, cpu_stage_depth=1)
    assert worker_window(cpu) == 2 * 2  # two batches of 2
    alone = beat(batch_ceilings={"unet": 1}, batch_slots=1, cpu_stage_depth=1)
    assert worker_window(alone) == 2  # one batch running, one image in a CPU stage
    assert worker_window(cpu, override=16) == 16  # DISPATCH_IN_FLIGHT_PER_QUEUE wins


def test_window_of_a_gpu_worker_is_about_two_batches() -> None:
    gpu = beat(batch_ceilings={"hrnet": 32, "unet": 16}, batch_slots=2, cpu_stage_depth=8)
    assert worker_window(gpu) == 2 * 32 + 8
    threads = beat(batch_ceilings={"hrnet": 32}, batch_slots=2, cpu_stage_depth=8, capacity=8)
    assert worker_window(threads) == 8  # no more than its task threads can run
    # a worker reporting no ceilings yet (or an older heartbeat) still gets a small window
    assert worker_window(beat()) == 2


def test_a_window_follows_the_heartbeat_as_published() -> None:
    raw = json.dumps(
        {
            "name": "w",
            "queue": "q",
            "batch_ceilings": {"m": 4},
            "batch_slots": 3,
            "cpu_stage_depth": 2,
            "models": [{"name": "m"}],
        }
    )
    parsed = parse_heartbeat(raw)
    assert parsed is not None and worker_window(parsed) == 4 * 3 + 2
