"""The event tracker that merges Socket.IO events and REST snapshots (pure), and the watcher's
reconnection."""

from __future__ import annotations

import asyncio
from typing import Any

from cellseg_client.schema import Job
from cellseg_client.watch import JobTracker, JobWatcher


def snapshot(job_id: str, statuses: list[str], job_status: str = "running") -> Job:
    counts: dict[str, Any] = {"total": len(statuses)}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return Job.from_json(
        {
            "id": job_id,
            "status": job_status,
            "model": "hrnet",
            "threshold": 0.5,
            "min_area": 50,
            "counts": counts,
            "images": [
                {"id": f"i{n}", "filename": f"{n}.png", "status": s} for n, s in enumerate(statuses)
            ],
        }
    )


def test_each_status_change_is_reported_once_whatever_its_source() -> None:
    t = JobTracker()
    t.add("j")
    first = t.on_snapshot(snapshot("j", ["queued", "queued"]))
    assert [(e.name, e.data.get("status")) for e in first] == [
        ("image.update", "queued"),
        ("image.update", "queued"),
        ("job.progress", None),
    ]
    socket = t.on_socket("image.update", {"job_id": "j", "image_id": "i0", "status": "done"})
    assert [e.source for e in socket] == ["socket"]
    again = t.on_snapshot(snapshot("j", ["done", "processing"]))
    assert [(e.name, e.data.get("image_id")) for e in again] == [
        ("image.update", "i1"),
        ("job.progress", None),
    ]


def test_status_never_moves_backwards() -> None:
    t = JobTracker()
    t.add("j")
    t.on_socket("image.update", {"job_id": "j", "image_id": "i0", "status": "done"})
    assert (
        t.on_socket("image.update", {"job_id": "j", "image_id": "i0", "status": "processing"}) == []
    )
    assert [e.name for e in t.on_snapshot(snapshot("j", ["processing"]))] == ["job.progress"]


def test_job_done_comes_once_and_only_from_the_truth() -> None:
    t = JobTracker()
    t.add("j")
    assert t.on_socket("job.done", {"job_id": "j", "status": "done"}) == []
    done = t.on_snapshot(snapshot("j", ["done", "failed"], "partial"))
    assert [e.name for e in done][-1] == "job.done" and done[-1].data["status"] == "partial"
    assert t.pending_jobs == []
    assert t.on_snapshot(snapshot("j", ["done", "failed"], "partial")) == []


def test_events_of_jobs_not_watched_are_ignored() -> None:
    t = JobTracker()
    t.add("j")
    assert t.on_socket("image.update", {"job_id": "other", "image_id": "x", "status": "done"}) == []
    assert t.on_socket("job.progress", "not a dict") == []


def test_a_status_the_client_does_not_know_does_not_break_the_tracker() -> None:
    t = JobTracker()
    t.add("j")
    paused = t.on_socket("image.update", {"job_id": "j", "image_id": "i0", "status": "paused"})
    assert [e.data["status"] for e in paused] == ["paused"]
    done = t.on_socket("image.update", {"job_id": "j", "image_id": "i0", "status": "done"})
    assert [e.data["status"] for e in done] == ["done"]


def test_a_socket_that_reconnects_reads_every_pending_job_again() -> None:
    """Events sent while the socket was down are gone: on reconnecting, the watcher reads the
    REST state of every job still pending, so a missed ``job.done`` is not waited for."""
    body = {
        "id": "j",
        "status": "done",
        "model": "hrnet",
        "threshold": 0.5,
        "min_area": 50,
        "counts": {"total": 1, "done": 1},
        "images": [{"id": "i0", "filename": "0.png", "status": "done"}],
    }

    class Transport:
        reads: list[str] = []

        async def get_json(self, path: str) -> dict[str, Any]:
            self.reads.append(path)
            return body

    async def reconnect() -> list[str]:
        watcher = JobWatcher(Transport(), use_socket=False)  # type: ignore[arg-type]
        watcher.add("j")
        watcher._inbox.clear()  # as after the first poll
        await watcher._on_connect()  # python-socketio calls it on every (re)connection
        events = await watcher._drain(poll_all=False)
        return [e.name for e in events]

    names = asyncio.run(reconnect())
    assert Transport.reads == ["/api/v1/jobs/j"]
    assert names[-1] == "job.done"


def test_a_connect_cancelled_mid_handshake_closes_the_socket_session() -> None:
    """The caller fails (say, a 401 on the first upload) while the Socket.IO handshake is in
    flight: the watcher's stream is cancelled and still closes the socket's HTTP session (no
    "Unclosed client session" or "Event loop is closed" noise at exit)."""

    async def cancelled_mid_connect() -> tuple[bool, Any]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)  # takes the handshake request, never answers
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        class Transport:
            url = f"http://127.0.0.1:{port}"
            api_key = "k"

        watcher = JobWatcher(Transport(), connect_timeout=10)  # type: ignore[arg-type]
        watcher.add("j")

        async def consume() -> None:
            async for _ in watcher.events():
                pass

        task = asyncio.create_task(consume())
        while watcher._sio is None or watcher._sio.eio.http is None:
            await asyncio.sleep(0.01)
        sio = watcher._sio
        await asyncio.sleep(0.2)  # the handshake request is on the wire
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        server.close()
        return watcher._sio is None, sio.eio.http

    released, http = asyncio.run(cancelled_mid_connect())
    assert released
    assert http is None or http.closed
