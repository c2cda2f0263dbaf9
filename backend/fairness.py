"""Deficit round robin over users with queued images, and each worker's window (pure, no I/O).

Each round every active user's deficit grows by its quantum; a user sends images while its
deficit covers their cost (1 per image) and it has images queued. A user whose queue empties
loses its deficit. The service order rotates so the user after the last one served starts the
next call; a user never served yet goes first: a 1-image job behind another user's 500 images
goes out with the next free slot.

The window is how many images the dispatcher keeps released to one worker (dispatched or
running): about two full batches of what that worker can run now, read from its heartbeat, so a
newcomer's image waits behind a couple of batches, not behind a fixed number of images that may
be ten batches on a small CPU.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from contracts.heartbeats import WorkerHeartbeat

T = TypeVar("T")
U = TypeVar("U", bound=Hashable)


@dataclass
class DrrResult(Generic[U, T]):
    picked: list[tuple[U, T]]
    deficits: dict[U, float]
    order: list[U]  # service order for the next call


def drr_pick(
    queued: Mapping[U, Sequence[T]],
    deficits: Mapping[U, float],
    order: Sequence[U],
    capacity: int,
    quantum: float = 1.0,
) -> DrrResult[U, T]:
    """Pick up to ``capacity`` items fairly from per-user queues (each item costs 1).

    ``order`` is the previous service order; users not in it (never served) go first, in the
    order given.
    """
    users = [u for u in queued if u not in order] + [u for u in order if u in queued]
    users = [u for u in users if queued[u]]
    deficit = {u: deficits.get(u, 0.0) for u in users}
    position = dict.fromkeys(users, 0)
    picked: list[tuple[U, T]] = []
    last_served: U | None = None
    while len(picked) < capacity and any(position[u] < len(queued[u]) for u in users):
        for u in users:
            if position[u] >= len(queued[u]):
                continue
            deficit[u] += quantum
            while deficit[u] >= 1 and position[u] < len(queued[u]) and len(picked) < capacity:
                picked.append((u, queued[u][position[u]]))
                position[u] += 1
                deficit[u] -= 1
                last_served = u
            if len(picked) >= capacity:
                break
    for u in users:
        if position[u] >= len(queued[u]):
            deficit[u] = 0.0  # emptied: no credit carried
    if last_served is not None:
        i = users.index(last_served)
        users = users[i + 1 :] + users[: i + 1]
    return DrrResult(picked, deficit, list(users))


def worker_window(beat: WorkerHeartbeat, override: int | None = None) -> int:
    """Images to keep released to this worker: two full batches at its largest batch ceiling,
    or, when more, what it runs at once (one batch per device slot) plus one image per
    CPU-stage process (decoding or postprocessing beside the device); never more than its task
    threads (``capacity``: more would wait in the broker's queue, in arrival order). On a
    2-core CPU (ceilings 1-2, one slot, one CPU process) that is 2-4 images; on a GPU with
    ceilings of 32, two slots, 8 CPU processes and 96 task threads, 72. ``override``
    (``DISPATCH_IN_FLIGHT_PER_QUEUE``) wins."""
    if override is not None:
        return override
    ceiling = max(1, max(beat.batch_ceilings.values(), default=1))
    running = ceiling * max(1, beat.batch_slots) + max(1, beat.cpu_stage_depth)
    window = max(2 * ceiling, running)
    return min(window, beat.capacity) if beat.capacity > 0 else window
