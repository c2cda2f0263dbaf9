"""Retry policy and ``Retry-After`` parsing (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cellseg_client.retry import RetryPolicy, parse_retry_after


@pytest.mark.parametrize(
    ("header", "seconds"), [("3", 3.0), (" 0 ", 0.0), ("1.5", 1.5), ("-4", 0.0), (None, None)]
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0


def test_garbage_retry_after_is_ignored() -> None:
    assert parse_retry_after("soon") is None


def test_delay_honours_retry_after_up_to_its_cap() -> None:
    policy = RetryPolicy(retry_after_max_s=60)
    rng = random.Random(0)
    assert policy.delay(1, 4.0, rng) == 4.0
    assert policy.delay(1, 3600.0, rng) == 60


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base_s=1, backoff_max_s=8)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(50)]
        assert all(0.1 * ceiling <= d <= ceiling for d in delays)


def test_may_retry_stops_at_attempts_and_elapsed_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=10)
    assert policy.may_retry(1, 0, 1) and policy.may_retry(2, 5, 4)
    assert not policy.may_retry(3, 0, 0)
    assert not policy.may_retry(1, 8, 3)
