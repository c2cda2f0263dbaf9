"""A job named on the command line: its full id, or the start of it (the web page shows the
first 8 characters), matched against the caller's own jobs."""

from __future__ import annotations

import re
import uuid

from cellseg_client.async_client import AsyncClient
from cellseg_client.cli.segment import UsageError

MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f-]+$")


class UnknownJob(LookupError):
    """No job of the caller's starts with the given characters (the CLI's "refused" exit, as
    the service's 404 for an unknown full id)."""


async def resolve_job_id(client: AsyncClient, ref: str) -> str:
    """The full id of the caller's job ``ref`` names (a full id is taken as it is).

    Raises:
        UsageError: ``ref`` is not the start of an id, or matches several of the caller's
            jobs (the message lists them).
        UnknownJob: ``ref`` matches none of the caller's jobs.
    """
    ref = ref.strip().lower()
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    if len(ref.replace("-", "")) < MIN_PREFIX or not _HEX.match(ref):
        raise UsageError(
            f"{ref!r} is not a job id: give the full id or at least its first {MIN_PREFIX} "
            "characters (the web page shows 8)"
        )
    matches = [job async for job in client.iter_jobs() if job.id.startswith(ref)]
    if not matches:
        raise UnknownJob(f"no job of yours starts with {ref!r} (see: cellseg jobs)")
    if len(matches) > 1:
        listed = ", ".join(j.id for j in matches[:10])
        raise UsageError(
            f"{ref!r} is ambiguous: {len(matches)} of your jobs start with it ({listed}); "
            "give more characters"
        )
    return matches[0].id
