"""The ETA rule (``workers.eta``) on timelines whose true remaining time is known."""

from __future__ import annotations

import pytest

from workers.eta import RateFacts, eta_seconds


def within_factor_2(estimate: float | None, truth: float) -> bool:
    return estimate is not None and truth / 2 <= estimate <= truth * 2


def test_after_an_idle_spell_a_burst_is_estimated_from_its_own_rate() -> None:
    """The service was idle for ten minutes; a 30-image job then runs at 1 image/s. The old
    rule (images in the last 60 s / 60 s) said 28 / (2 / 60) = 14 min at the second image."""
    for finished in range(2, 30):
        t = float(finished)  # seconds since the first image started
        facts = RateFacts(finished=finished, job_elapsed_s=t, recent=finished, recent_span_s=t)
        assert eta_seconds(30 - finished, 0, facts) == pytest.approx(30 - finished)


def test_a_three_image_job_is_not_told_minutes() -> None:
    """Three images done in 1.8 s: at the second the estimate is about a second, not minutes."""
    facts = RateFacts(finished=2, job_elapsed_s=1.2, recent=2, recent_span_s=1.2)
    eta = eta_seconds(1, 0, facts)
    assert eta is not None and eta < 1.5


def test_a_thirty_image_job_in_batches_stays_within_a_factor_2_from_the_second_image() -> None:
    """Batches of 4 take 2 s each (2 images/s), the first after a 2 s start-up latency; other
    users' images ran at twice that rate a minute ago."""
    total, batch, batch_s = 30, 4, 2.0
    for finished in range(2, total):
        done_batches = -(-finished // batch)
        t = done_batches * batch_s  # the finishes of a batch arrive together
        truth = (-(-total // batch) - done_batches) * batch_s
        facts = RateFacts(finished, t, recent=finished + 20, recent_span_s=t + 5.0)
        if truth:
            assert within_factor_2(eta_seconds(total - finished, 0, facts), truth), finished


def test_before_the_job_finishes_anything_the_service_rate_and_the_queue_ahead_decide() -> None:
    facts = RateFacts(finished=0, job_elapsed_s=None, recent=10, recent_span_s=5.0)
    assert eta_seconds(4, 6, facts) == pytest.approx(5.0)  # (4 + 6) images at 2 images/s


def test_nothing_known_is_no_estimate_and_nothing_left_is_zero() -> None:
    unknown = RateFacts(finished=0, job_elapsed_s=None, recent=0, recent_span_s=None)
    assert eta_seconds(5, 0, unknown) is None
    assert eta_seconds(0, 3, unknown) == 0.0


def test_cancelled_images_are_neither_work_done_nor_work_left() -> None:
    """The caller counts only done and failed as finished, only waiting and running as left."""
    facts = RateFacts(finished=2, job_elapsed_s=4.0, recent=2, recent_span_s=4.0)
    assert eta_seconds(1, 0, facts) == pytest.approx(2.0)


def test_images_in_flight_count_as_a_quarter_done() -> None:
    """Two finished and four in flight after 2 s: 3 images' work in 2 s, 27 images' work left."""
    facts = RateFacts(finished=2, job_elapsed_s=2.0, recent=0, recent_span_s=None, running=4)
    assert eta_seconds(28, 0, facts) == pytest.approx(27 / 1.5)
