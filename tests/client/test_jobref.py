"""``cellseg status``/``cancel`` accept the start of a job id (pure: a stub job list)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from cellseg_client.cli.jobref import UnknownJob, resolve_job_id
from cellseg_client.cli.segment import UsageError

IDS = [
    "3f2a9c10-0000-4000-8000-000000000001",
    "3f2a9c11-0000-4000-8000-000000000002",
    "77aa0000-0000-4000-8000-000000000003",
]


class Jobs:
    async def iter_jobs(self) -> AsyncIterator[Any]:
        for job_id in IDS:
            yield SimpleNamespace(id=job_id)


def resolve(ref: str) -> str:
    return asyncio.run(resolve_job_id(Jobs(), ref))  # type: ignore[arg-type]


def test_a_full_id_or_a_unique_start_names_the_job() -> None:
    assert resolve(IDS[2]) == IDS[2]
    assert resolve("77aa0000") == IDS[2]
    assert resolve("3F2A9C10") == IDS[0]


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("3f2a9c1", "ambiguous: 2 of your jobs"),
        ("3f", "not a job id"),
        ("job-1", "not a job id"),
    ],
)
def test_an_ambiguous_or_malformed_start_is_a_usage_error(ref: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        resolve(ref)


def test_a_start_matching_none_of_the_callers_jobs_is_unknown() -> None:
    """Refused, as the service's 404 for an unknown full id, not a usage error."""
    with pytest.raises(UnknownJob, match="no job of yours starts with 'abcdef12'"):
        resolve("abcdef12")
