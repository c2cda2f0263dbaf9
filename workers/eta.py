"""The ETA of a job's ``job.progress`` event: a pure rule over what the database knows.

The job's own rate (images it finished over the time since its first image started, its images
in flight counted as a quarter done: :data:`RUNNING_DONE_FRACTION`; without them the first
images' latency would make every early rate too low) says how fast this job moves with its fair
share of the workers now; the workers' recent throughput
(images the service finished in the last minute over the time those images took from their
first start, so an idle spell before them does not dilute it) says how fast the service moves.
The job's own rate carries more weight with every image it finishes; before it has finished
one, only the service's throughput is known, and the images of other users waiting ahead of
the job count as work before it.
"""

from __future__ import annotations

from dataclasses import dataclass

OWN_RATE_FULL_WEIGHT = 4
"""Finished images after which the job's own rate alone decides (before: blended)."""

RUNNING_DONE_FRACTION = 0.25
"""How much of an in-flight image's work counts as done: the dispatcher keeps about two
batches in flight per worker, one running (half done on average) and one waiting."""


@dataclass(frozen=True)
class RateFacts:
    """What one progress query returns besides the counts.

    Attributes:
        finished: the job's images done or failed (cancelled ones are not work done).
        job_elapsed_s: seconds since the job's first image started (``None``: none started).
        running: the job's images being processed now.
        recent: images the service finished in the last minute.
        recent_span_s: seconds from the first start of those ``recent`` images until now.
    """

    finished: int
    job_elapsed_s: float | None
    recent: int
    recent_span_s: float | None
    running: int = 0


def rates(facts: RateFacts) -> tuple[float | None, float | None]:
    """(the job's own images/s, the service's recent images/s); ``None`` where unknown."""
    own = None
    if facts.finished and facts.job_elapsed_s and facts.job_elapsed_s > 0:
        own = (facts.finished + RUNNING_DONE_FRACTION * facts.running) / facts.job_elapsed_s
    service = None
    if facts.recent and facts.recent_span_s and facts.recent_span_s > 0:
        service = facts.recent / facts.recent_span_s
    return own, service


def eta_seconds(remaining: int, ahead: int, facts: RateFacts) -> float | None:
    """Seconds until the job's ``remaining`` images (waiting or running) are finished.

    Args:
        remaining: the job's images not finished and not cancelled (``facts.running`` of them
            running now).
        ahead: images of other jobs waiting ahead of the job's first waiting image.
        facts: see :class:`RateFacts`.

    Returns:
        0.0 when nothing remains; ``None`` when no rate is known yet.
    """
    if remaining <= 0:
        return 0.0
    own, service = rates(facts)
    if own is None and service is None:
        return None
    if own is None and service is not None:
        return (remaining + ahead) / service
    weight = min(1.0, facts.finished / OWN_RATE_FULL_WEIGHT)
    rate = float(own or 0.0)
    if service is not None:
        rate = weight * rate + (1 - weight) * service
    return (remaining - RUNNING_DONE_FRACTION * min(facts.running, remaining)) / rate
