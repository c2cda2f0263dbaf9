"""Watching jobs: Socket.IO events when the socket connects, REST polling when it cannot.

Events are a live view; the REST state is the truth. So the watcher merges both: it listens on
Socket.IO (``auth={"token": key}``, ``subscribe`` to each job) and also reads each unfinished
job over REST, often while the socket is down and now and then while it is up (an event lost
in a Redis restart is still seen). :class:`JobTracker` turns both into one deduplicated stream:
an image's status only moves forward, and ``job.done`` comes once per job, after every image's
final ``image.update``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import socketio

from cellseg_client.schema import IMAGE_TERMINAL, Counts, Event, Job
from cellseg_client.transport import API_PREFIX, AsyncTransport

log = logging.getLogger(__name__)

IMAGE_UPDATE, JOB_PROGRESS, JOB_DONE = "image.update", "job.progress", "job.done"
_RANK = {"queued": 0, "dispatched": 1, "processing": 2, "done": 3, "failed": 3, "cancelled": 3}


class JobTracker:
    """Last known state of the watched jobs; folds socket events and REST snapshots into new
    events to report (pure, no IO)."""

    def __init__(self) -> None:
        self.images: dict[str, str] = {}  # image id -> status
        self.jobs: set[str] = set()
        self.finished: set[str] = set()  # jobs whose job.done was reported
        self._counts: dict[str, Counts] = {}

    def add(self, job_id: str) -> None:
        self.jobs.add(job_id)

    @property
    def pending_jobs(self) -> list[str]:
        return sorted(self.jobs - self.finished)

    def _image(self, job_id: str, data: dict[str, Any], source: str) -> list[Event]:
        image_id, status = str(data.get("image_id")), str(data.get("status"))
        known = self.images.get(image_id)
        if known is not None and (
            known in IMAGE_TERMINAL or _RANK.get(status, 0) <= _RANK.get(known, 0)
        ):
            return []
        self.images[image_id] = status
        return [Event(IMAGE_UPDATE, job_id, {**data, "job_id": job_id}, source)]

    def on_socket(self, name: str, data: Any) -> list[Event]:
        """Events to report for one Socket.IO event (``job.done`` is held back: the watcher
        reads the job first, see :meth:`on_snapshot`)."""
        if not isinstance(data, dict):
            return []
        job_id = str(data.get("job_id"))
        if job_id not in self.jobs or job_id in self.finished:
            return []
        if name == IMAGE_UPDATE:
            return self._image(job_id, data, "socket")
        if name == JOB_PROGRESS:
            return [Event(JOB_PROGRESS, job_id, dict(data), "socket")]
        return []

    def on_snapshot(self, job: Job) -> list[Event]:
        """Events to report after reading ``job`` over REST: an ``image.update`` per image whose
        status moved, ``job.progress`` when the counts changed, ``job.done`` once terminal."""
        if job.id not in self.jobs or job.id in self.finished:
            return []
        out: list[Event] = []
        for image in job.images:
            data: dict[str, Any] = {"image_id": image.id, "status": image.status}
            if image.error is not None:
                data["error"] = {"code": image.error.code, "message": image.error.message}
            if image.objects is not None:
                data["objects"] = image.objects
            out += self._image(job.id, data, "poll")
        if job.counts is not None and self._counts.get(job.id) != job.counts:
            self._counts[job.id] = job.counts
            payload = {"job_id": job.id, **vars(job.counts), "queue_position": None, "eta_s": None}
            out.append(Event(JOB_PROGRESS, job.id, payload, "poll"))
        if job.terminal:
            self.finished.add(job.id)
            counts = vars(job.counts) if job.counts is not None else {}
            out.append(
                Event(
                    JOB_DONE,
                    job.id,
                    {"job_id": job.id, "status": job.status, "counts": counts},
                    "poll",
                )
            )
        return out


class JobWatcher:
    """Reports progress of a growing set of jobs until every one is over.

    ``add()`` jobs (also while iterating), ``seal()`` when no more will come; :meth:`events`
    ends once sealed and every job's ``job.done`` was reported.

    Args:
        transport: the client's transport (URL, key, REST reads).
        poll_interval: seconds between REST reads of unfinished jobs while the socket is down.
        resync_interval: seconds between REST reads while the socket is up (safety net).
        use_socket: False to poll only.
        connect_timeout: how long to wait for the Socket.IO connection.
    """

    def __init__(
        self,
        transport: AsyncTransport,
        *,
        poll_interval: float = 2.0,
        resync_interval: float = 10.0,
        use_socket: bool = True,
        connect_timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self.poll_interval = poll_interval
        self.resync_interval = resync_interval
        self.use_socket = use_socket
        self.connect_timeout = connect_timeout
        self.tracker = JobTracker()
        self.socket_connected = False
        self._sealed = False
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._last_poll = 0.0
        self._sio: socketio.AsyncClient | None = None

    def add(self, job_id: str) -> None:
        if job_id not in self.tracker.jobs:
            self.tracker.add(job_id)
            self._post("_added", job_id)

    def extend(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self.add(job_id)

    def seal(self) -> None:
        self._sealed = True
        self._post("_sealed", None)

    @property
    def over(self) -> bool:
        return self._sealed and not self.tracker.pending_jobs

    async def events(self) -> AsyncIterator[Event]:
        """The merged, deduplicated event stream (see the module docstring)."""
        loop = asyncio.get_running_loop()
        try:  # a connect cancelled mid-handshake (the caller failed) still closes its session
            if self.use_socket:
                await self._connect()
            self._inbox.clear()  # what was added before is read by the first poll
            self._last_poll = loop.time()
            for event in await self._poll(self.tracker.pending_jobs):
                yield event
            while not self.over:
                interval = self.resync_interval if self.socket_connected else self.poll_interval
                wait = self._last_poll + interval - loop.time()
                if wait > 0 and not self._inbox:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=wait)
                    except TimeoutError:
                        pass
                self._wake.clear()
                poll_all = loop.time() >= self._last_poll + interval
                if poll_all:
                    self._last_poll = loop.time()
                for event in await self._drain(poll_all):
                    yield event
        finally:
            await self._disconnect()

    def _post(self, name: str, data: Any) -> None:
        self._inbox.append((name, data))
        self._wake.set()

    async def _drain(self, poll_all: bool) -> list[Event]:
        out: list[Event] = []
        poll: set[str] = set(self.tracker.pending_jobs if poll_all else ())
        while self._inbox:
            name, data = self._inbox.popleft()
            if name == "_added":
                poll.add(str(data))
                await self._subscribe(str(data))
            elif name == "_reconnected":
                poll.update(self.tracker.pending_jobs)
            elif name == JOB_DONE and isinstance(data, dict):
                poll.add(str(data.get("job_id")))  # read the truth before reporting it over
            elif not name.startswith("_"):
                out += self.tracker.on_socket(name, data)
        return out + await self._poll(sorted(poll & set(self.tracker.pending_jobs)))

    async def _poll(self, job_ids: list[str]) -> list[Event]:
        out: list[Event] = []
        for job_id in job_ids:
            body = await self._transport.get_json(f"{API_PREFIX}/jobs/{job_id}")
            out += self.tracker.on_snapshot(Job.from_json(body))
        return out

    # --- Socket.IO -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        sio = socketio.AsyncClient(reconnection=True, logger=False, handle_sigint=False)
        for name in (IMAGE_UPDATE, JOB_PROGRESS, JOB_DONE):
            sio.on(name, self._handler(name))
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        self._sio = sio
        try:
            async with asyncio.timeout(2 * self.connect_timeout):  # a silent host, not a refusal
                await sio.connect(
                    self._transport.url,
                    auth={"token": self._transport.api_key or ""},
                    wait_timeout=self.connect_timeout,
                )
        except (socketio.exceptions.ConnectionError, OSError, TimeoutError) as exc:
            log.warning(
                "live progress unavailable (%s); polling every %.1f s instead",
                exc or type(exc).__name__,
                self.poll_interval,
            )
            await self._disconnect()

    def _handler(self, name: str) -> Any:
        async def handle(data: Any) -> None:
            self._post(name, data)

        return handle

    async def _on_connect(self) -> None:
        self.socket_connected = True
        log.info("live progress: Socket.IO connected")
        for job_id in self.tracker.pending_jobs:
            await self._subscribe(job_id)
        self._post("_reconnected", None)

    async def _on_disconnect(self, *args: Any) -> None:
        self.socket_connected = False

    async def _subscribe(self, job_id: str) -> None:
        sio = self._sio
        if sio is None:
            return
        try:
            await sio.emit("subscribe", {"job_id": job_id})
        except socketio.exceptions.SocketIOError as exc:
            log.debug("subscribe %s failed: %s", job_id, exc)

    async def _disconnect(self) -> None:
        sio, self._sio = self._sio, None
        self.socket_connected = False
        if sio is not None:
            try:
                await sio.disconnect()
            except (socketio.exceptions.SocketIOError, OSError) as exc:  # best effort
                log.debug("socket disconnect: %s", exc)
