from __future__ import annotations

from backend.dispatcher import assign_queues
from backend.fairness import drr_pick


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
