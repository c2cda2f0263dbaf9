"""``AsyncClient``: the whole REST API, submissions split to the server's limits, live progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cellseg_client.batching import plan_batches, send_isolating, too_large_message
from cellseg_client.errors import ApiError, CellsegError, LocalFileError
from cellseg_client.files import content_type
from cellseg_client.retry import NO_RETRY, RetryPolicy
from cellseg_client.schema import Event, Health, Job, JobPage, Limits, ModelInfo
from cellseg_client.transport import API_PREFIX, DEFAULT_TIMEOUT, AsyncTransport, FilePart
from cellseg_client.watch import JobWatcher

PathLike = str | Path
RESULT_FORMATS = ("json", "geojson", "coco")


@dataclass(frozen=True)
class SubmittedImage:
    """Where an uploaded file went: its job and image ids."""

    job_id: str
    image_id: str


@dataclass
class Submission:
    """What :meth:`AsyncClient.submit` did: the ``jobs`` created, each file's ``images`` entry,
    and the files ``rejected`` (by the client, e.g. too large, or by the server, e.g. not a
    valid image) with the error saying why."""

    jobs: list[Job] = field(default_factory=list)
    images: dict[Path, SubmittedImage] = field(default_factory=dict)
    rejected: dict[Path, CellsegError] = field(default_factory=dict)


class AsyncClient:
    """Client of one CellSeg Serve gateway.

    Args:
        url: the gateway's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: the user's API key.
        max_concurrency: uploads (jobs) sent at once by :meth:`submit`.
        retry: retry policy (429/502/503 and connection failures); see
            :class:`~cellseg_client.retry.RetryPolicy`.
        timeout: httpx timeout of each request.
        transport: an existing transport to use instead (``url``/``api_key`` are then ignored).

    Use as ``async with AsyncClient(url, key) as client: ...`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: AsyncTransport | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.transport = transport or AsyncTransport(
            url, api_key, retry=retry, timeout=timeout, max_connections=max(16, max_concurrency)
        )
        self.max_concurrency = max_concurrency
        self._limits: Limits | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    @property
    def url(self) -> str:
        return self.transport.url

    # --- models and limits ---------------------------------------------------------------------

    async def _read_models(self) -> tuple[list[ModelInfo], Limits]:
        body = await self.transport.get_json(f"{API_PREFIX}/models")
        self._limits = Limits.from_json(body["limits"])
        return [ModelInfo.from_json(m) for m in body["models"]], self._limits

    async def models(self) -> list[ModelInfo]:
        """The servable models, each with the live workers that run it."""
        return (await self._read_models())[0]

    async def limits(self, refresh: bool = False) -> Limits:
        """The server's upload limits (read once from ``GET /models``, then cached)."""
        if self._limits is None or refresh:
            return (await self._read_models())[1]
        return self._limits

    # --- jobs ----------------------------------------------------------------------------------

    async def create_job(
        self,
        paths: Sequence[PathLike],
        model: str,
        threshold: float = 0.5,
        min_area: int = 50,
        *,
        filenames: Sequence[str] | None = None,
        split: bool = True,
        diameter: float | str | None = None,
        plane: int | None = None,
        channel: int | None = None,
    ) -> Job:
        """Upload ``paths`` as ONE job (they must fit the server's limits; see :meth:`submit`).

        ``filenames`` are the names the server records (default: each file's name). ``split``:
        separate touching objects; ``diameter``: object diameter in pixels, ``"auto"`` or None
        (as the model was trained); ``plane``/``channel`` choose the 2-D image of TIFF stacks
        (and ``channel`` one colour of colour images). The answer lists the images in upload
        order.
        """
        files = [Path(p) for p in paths]
        names = list(filenames) if filenames is not None else [p.name for p in files]
        if len(names) != len(files):
            raise ValueError("filenames must name every file")
        parts = [
            FilePart("files", p, n, content_type(p)) for p, n in zip(files, names, strict=True)
        ]
        form = _form(model, threshold, min_area, split, diameter)
        form.update(
            {k: str(v) for k, v in (("plane", plane), ("channel", channel)) if v is not None}
        )
        response = await self.transport.request(
            "POST", f"{API_PREFIX}/jobs", data=form, files=parts
        )
        return Job.from_json(response.json())

    async def submit(
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
        """Upload any number of files as as many jobs as the server's ``MAX_FILES_PER_JOB`` and
        ``MAX_UPLOAD_MB`` need (and ``max_files_per_job`` when smaller), ``max_concurrency`` at
        a time. A file the server refuses (not an image, too many pixels) fails alone: its batch
        is sent again without it. Files are sent in the order given.

        Raises:
            ApiError: a refusal that concerns the whole request (bad key, unknown model,
                invalid threshold), raised once the other uploads have finished.
        """
        files = [Path(p) for p in paths]
        limits = await self.limits()
        sizes = {p: p.stat().st_size for p in files}
        batches, too_large = plan_batches(files, sizes.__getitem__, limits, max_files_per_job)
        sub = Submission()
        for p in too_large:
            sub.rejected[p] = LocalFileError(
                str(p), "upload_too_large", too_large_message(sizes[p], limits)
            )
        slots = asyncio.Semaphore(self.max_concurrency)

        async def send(batch: list[Path]) -> Job:
            return await self.create_job(
                batch, model, threshold, min_area, split=split, diameter=diameter
            )

        async def upload(batch: list[Path]) -> None:
            async with slots:
                outcomes = await send_isolating(batch, send)
            for sent, outcome in outcomes:
                if isinstance(outcome, ApiError):
                    sub.rejected[sent[0]] = outcome
                    continue
                sub.jobs.append(outcome)
                for p, image in zip(sent, outcome.images, strict=True):
                    sub.images[p] = SubmittedImage(outcome.id, image.id)

        errors = [
            r
            for r in await asyncio.gather(*(upload(b) for b in batches), return_exceptions=True)
            if isinstance(r, BaseException)
        ]
        if errors:
            raise errors[0]
        return sub

    async def jobs(self, limit: int = 20, offset: int = 0) -> JobPage:
        """One page of the caller's jobs, newest first (``limit`` 1..100)."""
        body = await self.transport.get_json(
            f"{API_PREFIX}/jobs", params={"limit": limit, "offset": offset}
        )
        return JobPage(
            items=[Job.from_json(j) for j in body["items"]],
            total=int(body["total"]),
            limit=int(body["limit"]),
            offset=int(body["offset"]),
        )

    async def iter_jobs(self, page_size: int = 100) -> AsyncIterator[Job]:
        """Every job of the caller, newest first, page by page."""
        offset = 0
        while True:
            page = await self.jobs(limit=page_size, offset=offset)
            for job in page.items:
                yield job
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def job(self, job_id: str) -> Job:
        """One job with its counts and every image's status and error."""
        return Job.from_json(await self.transport.get_json(f"{API_PREFIX}/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel the job's images that have not started; answers the counts afterwards."""
        response = await self.transport.request("DELETE", f"{API_PREFIX}/jobs/{job_id}")
        body: dict[str, Any] = response.json()
        return body

    # --- results -------------------------------------------------------------------------------

    async def results(self, job_id: str, format: str = "json") -> dict[str, Any]:
        """The whole job's results once it is over: ``json``, ``geojson`` or ``coco``.

        Raises:
            NotReady: the job still has pending images.
        """
        body: dict[str, Any] = await self.transport.get_json(
            f"{API_PREFIX}/jobs/{job_id}/results", params={"format": _checked(format)}
        )
        return body

    async def image_result(
        self, job_id: str, image_id: str, format: str = "json"
    ) -> dict[str, Any]:
        """One done image's result: ``json`` (polygons, metrics, timings), ``geojson``, ``coco``.

        Raises:
            NotReady: the image is not done (``details["status"]`` says what it is).
        """
        body: dict[str, Any] = await self.transport.get_json(
            f"{API_PREFIX}/jobs/{job_id}/images/{image_id}/result",
            params={"format": _checked(format)},
        )
        return body

    async def mask(self, job_id: str, image_id: str) -> bytes:
        """One done image's label mask: a 16-bit PNG, 0 = background, k = object k."""
        response = await self.transport.request(
            "GET", f"{API_PREFIX}/jobs/{job_id}/images/{image_id}/mask.png"
        )
        return response.content

    async def segment(
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
        """One image through ``POST /segment``, waiting for its result (the ``json`` result plus
        ``job_id`` and ``image_id``).

        Raises:
            GatewayTimeout: no result within the server's ``SYNC_TIMEOUT_S``; ``details`` has
                ``job_id``/``image_id`` and ``status`` (``processing``: fetch it later).
            ValidationFailed: the image failed (``code`` says why).
        """
        p = Path(path)
        response = await self.transport.request(
            "POST",
            f"{API_PREFIX}/segment",
            data=_form(model, threshold, min_area, split, diameter),
            files=[FilePart("file", p, p.name, content_type(p))],
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        body: dict[str, Any] = response.json()
        return body

    # --- progress and health -------------------------------------------------------------------

    def watcher(self, **options: Any) -> JobWatcher:
        """A :class:`~cellseg_client.watch.JobWatcher` on this client's transport, to which jobs
        can be added while it runs (``poll_interval``, ``resync_interval``, ``use_socket``)."""
        return JobWatcher(self.transport, **options)

    def watch(self, job_ids: str | Iterable[str], **options: Any) -> AsyncIterator[Event]:
        """Progress events of the jobs until every one is over: Socket.IO when it connects,
        REST polling otherwise (see :mod:`cellseg_client.watch`)."""
        watcher = self.watcher(**options)
        watcher.extend([job_ids] if isinstance(job_ids, str) else job_ids)
        watcher.seal()
        return watcher.events()

    async def health(self) -> Health:
        """``/healthz`` and ``/readyz`` of the gateway, without retries.

        Raises:
            TransportError: the gateway does not answer.
        """
        alive = await self.transport.request(
            "GET", "/healthz", retry=NO_RETRY, raise_for_status=False
        )
        ready = await self.transport.request(
            "GET", "/readyz", retry=NO_RETRY, raise_for_status=False
        )
        try:
            body = ready.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        error = body.get("error")
        if isinstance(error, dict):
            checks, message = error.get("checks"), str(error.get("message", ""))
        else:
            checks, message = body.get("checks"), ""
        return Health(
            alive=alive.status_code == 200,
            ready=ready.status_code == 200,
            checks=dict(checks or {}),
            message=message,
        )


def _form(
    model: str,
    threshold: float,
    min_area: int,
    split: bool = True,
    diameter: float | str | None = None,
) -> dict[str, str]:
    """The form fields of an upload (``POST /jobs`` and ``POST /segment``)."""
    form = {
        "model": model,
        "threshold": repr(float(threshold)),
        "min_area": str(min_area),
        "split": "true" if split else "false",
    }
    if diameter is not None:
        form["diameter"] = diameter if isinstance(diameter, str) else repr(float(diameter))
    return form


def _checked(fmt: str) -> str:
    if fmt not in RESULT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(RESULT_FORMATS)}")
    return fmt
