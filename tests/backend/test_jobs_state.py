"""Job status and counts from image status counts: every rule of contracts/jobs_state.py."""

from __future__ import annotations

import pytest

from contracts.jobs_state import JOB_STATUSES, counts_payload, is_terminal, job_status


@pytest.mark.parametrize(
    ("counts", "total", "expected"),
    [
        # pending, nothing has left 'queued'
        ({"queued": 3}, 3, "queued"),
        ({}, 2, "queued"),  # no row counted yet: waiting
        # pending, something has left 'queued'
        ({"queued": 2, "dispatched": 1}, 3, "running"),
        ({"dispatched": 3}, 3, "running"),
        ({"processing": 1, "queued": 2}, 3, "running"),
        ({"done": 1, "queued": 2}, 3, "running"),
        ({"failed": 1, "processing": 1}, 2, "running"),
        ({"cancelled": 1, "queued": 1}, 2, "running"),
        ({"done": 2}, 3, "running"),  # the third image is not counted: still waiting
        # all terminal, one kind
        ({"done": 3}, 3, "done"),
        ({"failed": 2}, 2, "failed"),
        ({"cancelled": 4}, 4, "cancelled"),
        # all terminal, mixed
        ({"done": 2, "failed": 1}, 3, "partial"),
        ({"done": 2, "cancelled": 1}, 3, "cancelled"),  # cancelled midway
        ({"failed": 1, "cancelled": 2}, 3, "cancelled"),
        ({"done": 1, "failed": 1, "cancelled": 1}, 3, "cancelled"),
        # a single image
        ({"queued": 1}, 1, "queued"),
        ({"processing": 1}, 1, "running"),
        ({"done": 1}, 1, "done"),
    ],
)
def test_job_status(counts: dict[str, int], total: int, expected: str) -> None:
    assert job_status(counts, total) == expected
    assert expected in JOB_STATUSES


@pytest.mark.parametrize(
    ("counts", "total"),
    [
        ({"queued": 1}, 0),  # a job has at least one image
        ({"paused": 1}, 1),  # unknown status
        ({"done": -1}, 1),
        ({"done": 3}, 2),  # more images counted than the job has
    ],
)
def test_job_status_refuses_inconsistent_counts(counts: dict[str, int], total: int) -> None:
    with pytest.raises(ValueError):
        job_status(counts, total)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("queued", False),
        ("running", False),
        ("done", True),
        ("failed", True),
        ("cancelled", True),
        ("partial", True),
    ],
)
def test_is_terminal(status: str, terminal: bool) -> None:
    assert is_terminal(status) is terminal


def test_counts_payload_folds_dispatched_into_queued() -> None:
    counts = {"queued": 1, "dispatched": 2, "processing": 3, "done": 4, "failed": 5, "cancelled": 6}
    assert counts_payload(counts, 21) == {
        "total": 21,
        "queued": 3,
        "processing": 3,
        "done": 4,
        "failed": 5,
        "cancelled": 6,
    }


def test_counts_payload_counts_missing_images_as_queued() -> None:
    assert counts_payload({"done": 1}, 3) == {
        "total": 3,
        "queued": 2,
        "processing": 0,
        "done": 1,
        "failed": 0,
        "cancelled": 0,
    }
