"""A job's status and progress counts, derived from its images' statuses (pure functions).

Image statuses: ``queued → dispatched → processing → done | failed``, and
``queued | dispatched → cancelled``. The job status is never stored; it is computed from the
counts, by the REST API and by the workers' ``job.progress``/``job.done`` events alike:

===============================================  =============
images                                           job status
===============================================  =============
some still pending, none has left ``queued``     ``queued``
some still pending, at least one has left it     ``running``
all ``done``                                     ``done``
all ``failed``                                   ``failed``
all terminal, at least one ``cancelled``         ``cancelled``
all terminal, ``done`` and ``failed`` mixed      ``partial``
===============================================  =============

"Pending" is ``queued``, ``dispatched`` or ``processing``; "terminal" is ``done``, ``failed`` or
``cancelled``. Images missing from the counts (``total`` minus their sum) count as ``queued``.
Cancellation is the user's decision, so a job the user cancelled midway reads ``cancelled``
whatever its finished images did (their results stay available).
"""

from __future__ import annotations

from collections.abc import Mapping

IMAGE_STATUSES: tuple[str, ...] = (
    "queued",
    "dispatched",
    "processing",
    "done",
    "failed",
    "cancelled",
)
PENDING_STATUSES: frozenset[str] = frozenset({"queued", "dispatched", "processing"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled", "partial")
TERMINAL_JOB_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled", "partial"})


def _checked(counts: Mapping[str, int], total: int) -> dict[str, int]:
    unknown = set(counts) - set(IMAGE_STATUSES)
    if unknown:
        raise ValueError(f"unknown image status(es) {sorted(unknown)}")
    if total < 1:
        raise ValueError(f"a job has at least one image, got total={total}")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"negative count in {dict(counts)}")
    c = {s: int(counts.get(s, 0)) for s in IMAGE_STATUSES}
    seen = sum(c.values())
    if seen > total:
        raise ValueError(f"counts {dict(counts)} add up to {seen} > total {total}")
    c["queued"] += total - seen  # an image not counted (yet) is still waiting
    return c


def job_status(counts: Mapping[str, int], total: int) -> str:
    """The job's status (one of :data:`JOB_STATUSES`) from its images' status counts.

    Args:
        counts: ``{image status: number of images}``; absent statuses count 0.
        total: the job's number of images (``jobs.total``).

    Raises:
        ValueError: an unknown status, a negative count or ``total < 1``.
    """
    c = _checked(counts, total)
    pending = sum(c[s] for s in PENDING_STATUSES)
    if pending > 0:
        return "running" if total - c["queued"] > 0 else "queued"
    if c["done"] == total:
        return "done"
    if c["failed"] == total:
        return "failed"
    if c["cancelled"] > 0:
        return "cancelled"
    return "partial"  # done and failed, both > 0


def is_terminal(status: str) -> bool:
    """Whether a job status is final (``done``, ``failed``, ``cancelled``, ``partial``)."""
    return status in TERMINAL_JOB_STATUSES


def counts_payload(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """``{total, queued, processing, done, failed, cancelled}`` as users see them.

    ``queued`` includes ``dispatched``: a dispatched image is still waiting from the user's
    point of view. Used by ``GET /jobs/{id}`` and by the ``job.progress`` event.
    """
    c = _checked(counts, total)
    return {
        "total": total,
        "queued": c["queued"] + c["dispatched"],
        "processing": c["processing"],
        "done": c["done"],
        "failed": c["failed"],
        "cancelled": c["cancelled"],
    }
