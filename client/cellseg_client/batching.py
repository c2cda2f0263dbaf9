"""Splitting a submission into jobs that fit the server's limits (pure)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from cellseg_client.errors import ApiError
from cellseg_client.schema import Limits

T = TypeVar("T")
R = TypeVar("R")

FILE_ERROR_CODES: frozenset[str] = frozenset(
    {
        "empty_file",
        "unsupported_format",
        "invalid_image",
        "image_too_large",
        "upload_too_large",
        "choose_plane_or_channel",
    }
)
"""Error codes of ``POST /jobs`` that are about one file, not about the request: a batch
refused with one of them is retried file by file so only the bad file fails."""


def plan_batches(
    items: Sequence[T],
    size_of: Callable[[T], int],
    limits: Limits,
    max_files: int | None = None,
) -> tuple[list[list[T]], list[T]]:
    """Group ``items`` in order into batches of at most ``limits.max_files_per_job`` (and
    ``max_files`` when given) whose sizes add up to at most ``limits.max_upload_bytes``.

    Returns:
        ``(batches, too_large)``: ``too_large`` holds the items bigger than the upload limit on
        their own (they cannot be sent at all); every other item is in exactly one batch.
    """
    cap = (
        limits.max_files_per_job if max_files is None else min(max_files, limits.max_files_per_job)
    )
    cap = max(cap, 1)
    budget = limits.max_upload_bytes
    batches: list[list[T]] = []
    too_large: list[T] = []
    current: list[T] = []
    current_bytes = 0
    for item in items:
        size = size_of(item)
        if size > budget:
            too_large.append(item)
            continue
        if current and (len(current) >= cap or current_bytes + size > budget):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        batches.append(current)
    return batches, too_large


def too_large_message(size: int, limits: Limits) -> str:
    """Why a file of ``size`` bytes cannot be sent at all (see ``too_large`` of
    :func:`plan_batches`)."""
    return (
        f"{size} bytes is more than the server's upload limit of "
        f"{limits.max_upload_mb} MB (MAX_UPLOAD_MB)"
    )


async def send_isolating(
    batch: list[T], send: Callable[[list[T]], Awaitable[R]]
) -> list[tuple[list[T], R | ApiError]]:
    """``send(batch)``; when the server refuses it for one of :data:`FILE_ERROR_CODES`, the
    file it names (the error's ``index``) fails alone and the rest is sent again; an answer
    that names no file makes every item go on its own, so the bad file fails alone anyway.

    Returns:
        ``(items, outcome)`` pairs: the whole batch with ``send``'s answer, or, after a file
        error, pairs of the items sent together again (or one by one) with their answer or
        :class:`ApiError`.

    Raises:
        ApiError: a refusal that is not about a file (key, parameters), as ``send`` raised it.
    """
    try:
        return [(batch, await send(batch))]
    except ApiError as exc:
        if exc.code not in FILE_ERROR_CODES:
            raise
        if len(batch) == 1:
            return [(batch, exc)]
        index = exc.details.get("index")
        if isinstance(index, int) and 0 <= index < len(batch):
            rest = batch[:index] + batch[index + 1 :]
            return [([batch[index]], exc), *await send_isolating(rest, send)]
    out: list[tuple[list[T], R | ApiError]] = []
    for item in batch:
        out += await send_isolating([item], send)
    return out
