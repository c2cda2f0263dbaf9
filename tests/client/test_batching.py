"""Splitting submissions to the server's limits, and isolating a bad file (pure)."""

from __future__ import annotations

import asyncio

import pytest

from cellseg_client.batching import plan_batches, send_isolating
from cellseg_client.errors import ApiError, ValidationFailed
from cellseg_client.schema import Limits

MB = 1024 * 1024


def limits(files: int = 3, mb: int = 1) -> Limits:
    return Limits(max_upload_mb=mb, max_files_per_job=files, max_image_pixels=10**8)


def test_batches_respect_the_file_count() -> None:
    batches, too_large = plan_batches(list(range(7)), lambda _: 10, limits(files=3))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]] and too_large == []


def test_batches_respect_the_byte_budget_and_keep_order() -> None:
    sizes = {"a": 600_000, "b": 600_000, "c": 300_000, "d": MB, "e": 1}
    batches, _ = plan_batches(list(sizes), sizes.__getitem__, limits(files=10))
    assert batches == [["a"], ["b", "c"], ["d"], ["e"]]
    assert all(sum(sizes[x] for x in b) <= MB for b in batches)


def test_a_file_over_the_limit_alone_is_set_aside() -> None:
    sizes = {"a": 10, "huge": MB + 1, "b": 10}
    batches, too_large = plan_batches(list(sizes), sizes.__getitem__, limits())
    assert batches == [["a", "b"]] and too_large == ["huge"]


def test_a_client_cap_below_the_servers_applies() -> None:
    batches, _ = plan_batches(list(range(5)), lambda _: 1, limits(files=100), max_files=2)
    assert [len(b) for b in batches] == [2, 2, 1]


def test_a_file_error_sends_the_batch_again_file_by_file() -> None:
    sent: list[list[str]] = []

    async def send(batch: list[str]) -> str:
        sent.append(batch)
        if "bad" in batch:
            raise ValidationFailed(422, "invalid_image", "corrupt PNG")
        return "job-" + "".join(batch)

    outcomes = asyncio.run(send_isolating(["a", "bad", "b"], send))
    assert sent == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert [o for _, o in outcomes][0::2] == ["job-a", "job-b"]
    assert isinstance(outcomes[1][1], ApiError) and outcomes[1][0] == ["bad"]


def test_a_request_error_is_raised_not_isolated() -> None:
    calls = 0

    async def send(batch: list[str]) -> str:
        nonlocal calls
        calls += 1
        raise ValidationFailed(422, "unknown_model", "no such model")

    with pytest.raises(ValidationFailed):
        asyncio.run(send_isolating(["a", "b"], send))
    assert calls == 1


def test_the_file_the_server_names_fails_alone_and_the_rest_goes_together() -> None:
    sent: list[list[str]] = []

    async def send(batch: list[str]) -> str:
        sent.append(batch)
        if "bad" in batch:
            i = batch.index("bad")
            details = {"file": "bad.png", "index": i}
            raise ValidationFailed(422, "empty_file", "bad.png (file 2): empty", details)
        return "job-" + "".join(batch)

    outcomes = asyncio.run(send_isolating(["a", "bad", "b", "c"], send))
    assert sent == [["a", "bad", "b", "c"], ["a", "b", "c"]]
    assert outcomes[0][0] == ["bad"] and isinstance(outcomes[0][1], ApiError)
    assert outcomes[1] == (["a", "b", "c"], "job-abc")
