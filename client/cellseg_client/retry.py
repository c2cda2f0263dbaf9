"""When to retry a request and how long to wait (pure; the transport applies it).

Retried: 429 and 502/503 answers (the service did not take the request) and connection
failures before the request was sent; for idempotent methods also a lost answer (read
timeout, reset). Never retried: any other 4xx (it will not change) and 500.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503})
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After``.

    Attributes:
        max_attempts: tries in all (1 = never retry).
        max_elapsed_s: stop retrying once this much time has passed since the first try.
        backoff_base_s: wait before the 2nd try (doubles each time, jittered).
        backoff_max_s: cap of the computed wait.
        retry_after_max_s: cap of a server's ``Retry-After`` (a bogus huge value cannot hang
            the client).
        statuses: answer statuses that are retried.
    """

    max_attempts: int = 10
    max_elapsed_s: float = 300.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based).

        At least ``Retry-After`` when the server sent one; otherwise a full-jitter exponential
        backoff ``uniform(0, min(max, base * 2**(attempt-1)))``, never below 10% of it.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return rng.uniform(0.1 * ceiling, ceiling)

    def may_retry(self, attempt: int, elapsed_s: float, next_delay_s: float) -> bool:
        """Whether another try is allowed after ``attempt`` tries and ``elapsed_s`` seconds."""
        return attempt < self.max_attempts and elapsed_s + next_delay_s <= self.max_elapsed_s


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries (for probes whose error answer is the answer)."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or
    unparseable. A date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
