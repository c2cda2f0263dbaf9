"""``Client``: the blocking face of :class:`~cellseg_client.AsyncClient` for scripts and
notebooks.

Each ``Client`` runs an :class:`AsyncClient` on its own event loop in a daemon thread and waits
for each call, so it works the same in a plain script and inside Jupyter (whose main thread
already runs a loop). Bounded-concurrency uploads and live progress behave exactly as in the
async client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from cellseg_client.async_client import AsyncClient, PathLike, Submission
from cellseg_client.schema import Event, Health, Job, JobPage, Limits, ModelInfo

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; :meth:`run` waits for one coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cellseg-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt while waiting: stop the work, then raise
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Client:
    """Blocking client of one CellSeg Serve gateway; same arguments and methods as
    :class:`~cellseg_client.AsyncClient` (``watch`` is a plain iterator).

    Use as ``with Client(url, key) as client: ...`` or call :meth:`close`.
    """

    def __init__(self, url: str, api_key: str | None, **options: Any) -> None:
        self._runner = _LoopThread()

        async def make() -> AsyncClient:
            return AsyncClient(url, api_key, **options)

        try:
            self._async = self._runner.run(make())
        except BaseException:
            self._runner.close()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            self._runner.run(self._async.aclose())
            self._runner.close()

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def aio(self) -> AsyncClient:
        """The underlying async client (its coroutines must run on this client's loop)."""
        return self._async

    def models(self) -> list[ModelInfo]:
        return self._runner.run(self._async.models())

    def limits(self, refresh: bool = False) -> Limits:
        return self._runner.run(self._async.limits(refresh))

    def create_job(
        self,
        paths: Sequence[PathLike],
        model: str,
        threshold: float = 0.5,
        min_area: int = 50,
        *,
        filenames: Sequence[str] | None = None,
        split: bool = True,
        diameter: float | str | None = None,
    ) -> Job:
        return self._runner.run(
            self._async.create_job(
                paths,
                model,
                threshold,
                min_area,
                filenames=filenames,
                split=split,
                diameter=diameter,
            )
        )

    def submit(
        self,
        paths: Sequence[PathLike],
        model: str,
        threshold: float = 0.5,
        min_area: int = 50,
        *,
        max_files_per_job: int | None = None,
        split: bool = True,
        diameter: float | str | None = None,
    ) -> Submission:
        return self._runner.run(
            self._async.submit(
                paths,
                model,
                threshold,
                min_area,
                max_files_per_job=max_files_per_job,
                split=split,
                diameter=diameter,
            )
        )

    def jobs(self, limit: int = 20, offset: int = 0) -> JobPage:
        return self._runner.run(self._async.jobs(limit, offset))

    def job(self, job_id: str) -> Job:
        return self._runner.run(self._async.job(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._runner.run(self._async.cancel(job_id))

    def results(self, job_id: str, format: str = "json") -> dict[str, Any]:
        return self._runner.run(self._async.results(job_id, format))

    def image_result(self, job_id: str, image_id: str, format: str = "json") -> dict[str, Any]:
        return self._runner.run(self._async.image_result(job_id, image_id, format))

    def mask(self, job_id: str, image_id: str) -> bytes:
        return self._runner.run(self._async.mask(job_id, image_id))

    def segment(
        self,
        path: PathLike,
        model: str,
        threshold: float = 0.5,
        min_area: int = 50,
        *,
        timeout: float = 600.0,
        split: bool = True,
        diameter: float | str | None = None,
    ) -> dict[str, Any]:
        return self._runner.run(
            self._async.segment(
                path, model, threshold, min_area, timeout=timeout, split=split, diameter=diameter
            )
        )

    def health(self) -> Health:
        return self._runner.run(self._async.health())

    def watch(self, job_ids: str | Iterable[str], **options: Any) -> Iterator[Event]:
        """Progress events until every job is over (see :meth:`AsyncClient.watch`)."""

        async def start() -> AsyncIterator[Event]:
            return self._async.watch(job_ids, **options)

        events = self._runner.run(start())
        try:
            while True:
                try:
                    yield self._runner.run(_next(events))
                except StopAsyncIteration:
                    return
        finally:
            if not self._runner.loop.is_closed():
                self._runner.run(_close(events))


async def _next(events: AsyncIterator[Event]) -> Event:
    return await events.__anext__()


async def _close(events: AsyncIterator[Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
