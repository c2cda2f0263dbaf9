"""``cellseg segment``: a folder of images in; per-image results, ``objects.csv`` and
``summary.json`` out; resumable through the manifest in ``OUT``.

One run: find and hash the images; open the manifest; settle uploads cut off by a crash and
forget jobs the server lost; then, at once, upload what never reached the server (batches cut
to the server's limits, ``concurrency`` at a time) and watch every job, downloading each
image's results as soon as it is done; finally write ``objects.csv`` and ``summary.json``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellseg_client.async_client import AsyncClient
from cellseg_client.batching import plan_batches, send_isolating, too_large_message
from cellseg_client.cli import outputs
from cellseg_client.cli.manifest import Manifest, RunParams
from cellseg_client.cli.progress import Display, Snapshot
from cellseg_client.cli.resume import drop_unknown_jobs, reconcile, sent_name
from cellseg_client.errors import ApiError, NotReady
from cellseg_client.files import LocalImage, find_images, sha256_file
from cellseg_client.schema import Event, Job
from cellseg_client.watch import JobWatcher

log = logging.getLogger(__name__)

NOT_READY_RETRIES = 5


class UsageError(Exception):
    """The command cannot run as given (no images, OUT of another run)."""


@dataclass(frozen=True)
class SegmentOptions:
    inputs: Sequence[Path]
    model: str
    out: Path
    threshold: float = 0.5
    min_area: int = 50
    split: bool = True
    diameter: float | str | None = None
    plane: int | None = None
    channel: int | None = None
    formats: tuple[str, ...] = ("json", "geojson")
    concurrency: int = 4
    max_files_per_job: int | None = None
    poll_interval: float = 2.0
    use_socket: bool = True


@dataclass
class Outcome:
    """How one image (content hash) ended."""

    status: str  # done, failed, cancelled, rejected
    error: dict[str, str] | None = None
    objects: int | None = None


@dataclass
class RunReport:
    images: int
    done: int
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # image, code, message

    @property
    def ok(self) -> bool:
        return not self.failures and self.done == self.images


class SegmentRun:
    """One execution of ``cellseg segment`` (see the module docstring)."""

    def __init__(self, client: AsyncClient, opts: SegmentOptions, display: Display) -> None:
        self.client = client
        self.opts = opts
        self.display = display
        self.snap = Snapshot(phase="preparing")
        self.images: list[LocalImage] = []
        self.skipped: list[tuple[Path, str]] = []
        self.digest: dict[Path, str] = {}
        self.by_hash: dict[str, list[LocalImage]] = {}
        self.names: dict[Path, str] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.image_hash: dict[str, str] = {}  # server image id -> content hash
        self.queue: dict[str, int | None] = {}  # job id -> queue position
        self._downloads = asyncio.Semaphore(max(opts.concurrency, 1))
        self._manifest: Manifest | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("the manifest is opened by run()")
        return self._manifest

    async def run(self) -> RunReport:
        await self._find()
        params = RunParams(
            self.opts.model,
            self.opts.threshold,
            self.opts.min_area,
            self.opts.plane,
            self.opts.channel,
        )
        self._manifest = Manifest.open(self.opts.out, params)
        try:
            await reconcile(self.client, self.manifest)
            jobs = await drop_unknown_jobs(self.client, self.manifest)
            self.image_hash = {u.image_id: h for h, u in self.manifest.state.uploaded.items()}
            for digest, (code, message) in self.manifest.state.rejected.items():
                self._reject(digest, code, message)
            for digest in self.manifest.state.uploaded:
                self._take_if_written(digest)
            self.snap.phase = "uploading"
            self.display.start(self.snap)
            try:
                await self._upload_and_watch([j.id for j in jobs])
            finally:
                self.display.stop()
        except BaseException:
            self.manifest.close()
            # a run the server refused outright (e.g. an unknown model) must not tie OUT to
            # its parameters: with nothing uploaded, its manifest is forgotten
            self.manifest.forget_if_unused()
            raise
        self.manifest.close()
        return self._write_tables()

    # --- preparing -----------------------------------------------------------------------------

    async def _find(self) -> None:
        found = find_images(self.opts.inputs, exclude=[self.opts.out])
        for path, reason in found.skipped:
            log.warning("skipping %s: %s", path, reason)
        if not found.images:
            raise UsageError(
                "no PNG, JPEG or TIFF images in " + ", ".join(map(str, self.opts.inputs))
            )
        self.images, self.skipped = found.images, found.skipped
        digests = await asyncio.to_thread(lambda: [sha256_file(im.path) for im in self.images])
        for im, digest in zip(self.images, digests, strict=True):
            self.digest[im.path] = digest
            self.by_hash.setdefault(digest, []).append(im)
        self.names = outputs.output_names(self.images, self.digest)
        self.snap.total = len(self.images)

    # --- uploading -----------------------------------------------------------------------------

    async def _upload_and_watch(self, job_ids: list[str]) -> None:
        watcher = self.client.watcher(
            poll_interval=self.opts.poll_interval,
            resync_interval=max(5 * self.opts.poll_interval, 1.0),
            use_socket=self.opts.use_socket,
        )
        watcher.extend(job_ids)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._upload_all(watcher))
                async for event in watcher.events():
                    self._on_event(event, tg)
        except BaseExceptionGroup as group:
            raise _first(group) from None

    async def _upload_all(self, watcher: JobWatcher) -> None:
        """Upload every image the server never got, then tell the watcher no job will come."""
        state = self.manifest.state
        todo = [
            h
            for h in self.by_hash
            if h not in state.uploaded and h not in state.rejected and h not in self.outcomes
        ]
        try:
            if todo:
                limits = await self.client.limits()
                size = {h: self.by_hash[h][0].size for h in todo}
                batches, too_large = plan_batches(
                    todo, size.__getitem__, limits, self.opts.max_files_per_job
                )
                for h in too_large:
                    self._reject(h, "upload_too_large", too_large_message(size[h], limits))
                slots = asyncio.Semaphore(max(self.opts.concurrency, 1))
                async with asyncio.TaskGroup() as tg:
                    for batch in batches:
                        tg.create_task(self._upload(batch, slots, watcher))
        except BaseExceptionGroup as group:
            raise _first(group) from None
        finally:
            self.snap.phase = "segmenting"
            self.display.update(self.snap)
        watcher.seal()

    async def _upload(
        self, batch: list[str], slots: asyncio.Semaphore, watcher: JobWatcher
    ) -> None:
        async with slots:
            outcomes = await send_isolating(batch, self._send)
        for sent, outcome in outcomes:
            if isinstance(outcome, ApiError):  # about this one file: it fails alone
                self.manifest.record_rejected(sent[0], outcome.code, outcome.message)
                self._reject(sent[0], outcome.code, outcome.message)
            else:
                watcher.add(outcome.id)

    def _reject(self, digest: str, code: str, message: str) -> None:
        self._finish(digest, Outcome("rejected", {"code": code, "message": message}))

    async def _send(self, batch: list[str]) -> Job:
        paths = [self.by_hash[h][0].path for h in batch]
        names = [sent_name(p) for p in paths]
        token = self.manifest.record_pending(batch, names)
        try:
            job = await self.client.create_job(
                paths,
                self.opts.model,
                self.opts.threshold,
                self.opts.min_area,
                filenames=names,
                split=self.opts.split,
                diameter=self.opts.diameter,
                plane=self.opts.plane,
                channel=self.opts.channel,
            )
        except ApiError:  # answered: the server kept nothing of this request
            self.manifest.record_abandoned(token)
            raise
        images = {h: im.id for h, im in zip(batch, job.images, strict=True)}
        self.manifest.record_uploaded(token, job.id, images)
        self.image_hash.update({im: h for h, im in images.items()})
        return job

    # --- watching and downloading --------------------------------------------------------------

    def _on_event(self, event: Event, tg: asyncio.TaskGroup) -> None:
        data = event.data
        if event.name == "job.progress":
            if event.source == "socket" or event.job_id not in self.queue:
                self.queue[event.job_id] = data.get("queue_position")
        elif event.name == "job.done":
            self.queue.pop(event.job_id, None)
        elif event.name == "image.update":
            digest = self.image_hash.get(str(data.get("image_id")))
            if digest is None or digest in self.outcomes:
                return
            status = str(data.get("status"))
            if status == "done":
                tg.create_task(self._download(digest, event.job_id, str(data["image_id"])))
            elif status in ("failed", "cancelled"):
                error = data.get("error") or {"code": status, "message": f"the image was {status}"}
                self._finish(digest, Outcome(status, error))
        positions = [p for p in self.queue.values() if p is not None]
        self.snap.queue_position = min(positions) if positions else None
        self.display.update(self.snap)

    def _missing_outputs(self, digest: str) -> list[tuple[str, Path]]:
        return [
            (fmt, path)
            for im in self.by_hash.get(digest, ())
            for fmt, path in outputs.output_paths(
                self.opts.out, self.names[im.path], self.opts.formats
            ).items()
            if not path.exists()
        ]

    def _take_if_written(self, digest: str) -> None:
        """An image whose results a previous run wrote in full is done (results are only
        written for done images); it is neither fetched nor counted in the rate again."""
        result = outputs.read_cached(self.opts.out, digest)
        if digest in self.by_hash and result is not None and not self._missing_outputs(digest):
            self._finish(digest, Outcome("done", objects=int(result.get("count", 0))))

    async def _download(self, digest: str, job_id: str, image_id: str) -> None:
        async with self._downloads:
            result = outputs.read_cached(self.opts.out, digest)
            missing = self._missing_outputs(digest)
            if result is None or missing:
                result = await self._fetch(job_id, image_id, digest, missing)
        self._finish(digest, Outcome("done", objects=int(result.get("count", 0))))

    async def _fetch(
        self, job_id: str, image_id: str, digest: str, missing: list[tuple[str, Path]]
    ) -> dict[str, Any]:
        bodies: dict[str, bytes] = {}
        result: dict[str, Any] = {}
        for fmt in ["json", *sorted({fmt for fmt, _ in missing} - {"json"})]:
            for attempt in range(NOT_READY_RETRIES):
                try:
                    if fmt == "mask":
                        bodies[fmt] = await self.client.mask(job_id, image_id)
                    else:
                        body = await self.client.image_result(job_id, image_id, fmt)
                        bodies[fmt] = outputs.json_bytes(body)
                        result = body if fmt == "json" else result
                    break
                except NotReady:  # the event raced the commit; it is done a moment later
                    if attempt == NOT_READY_RETRIES - 1:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)
        for fmt, path in missing:
            outputs.write_atomic(path, bodies[fmt])
        outputs.write_atomic(outputs.cache_path(self.opts.out, digest), bodies["json"])
        return result

    def _finish(self, digest: str, outcome: Outcome) -> None:
        if digest in self.outcomes:
            return
        self.outcomes[digest] = outcome
        n = len(self.by_hash.get(digest, ()))
        if outcome.status == "done":
            self.snap.done += n
        else:
            self.snap.failed += n
        self.display.update(self.snap)

    # --- tables --------------------------------------------------------------------------------

    def _write_tables(self) -> RunReport:
        out = self.opts.out
        ordered = sorted(self.images, key=lambda im: (str(im.rel), str(im.path)))
        rows: list[tuple[str, dict[str, Any]]] = []
        entries: list[dict[str, Any]] = []
        report = RunReport(images=len(self.images), done=0)
        uploaded = self.manifest.state.uploaded
        for im in ordered:
            digest = self.digest[im.path]
            outcome = self.outcomes.get(digest) or Outcome(
                "unknown", {"code": "unknown", "message": "no final status was seen"}
            )
            result = outputs.read_cached(out, digest) if outcome.status == "done" else None
            if result is not None:
                rows.append((str(im.rel), result))
                report.done += 1
            else:
                error = outcome.error or {"code": outcome.status, "message": ""}
                report.failures.append(
                    (str(im.rel), error.get("code", ""), error.get("message", ""))
                )
            up = uploaded.get(digest)
            paths = outputs.output_paths(out, self.names[im.path], self.opts.formats)
            entries.append(
                {
                    "image": str(im.rel),
                    "path": str(im.path),
                    "sha256": digest,
                    "status": outcome.status,
                    "objects": outcome.objects,
                    "error": outcome.error,
                    "job_id": up.job_id if up else None,
                    "image_id": up.image_id if up else None,
                    "outputs": [p.relative_to(out).as_posix() for p in paths.values()]
                    if result is not None
                    else [],
                }
            )
        outputs.write_atomic(out / "objects.csv", outputs.objects_csv(rows))
        statuses = [e["status"] for e in entries]
        summary = {
            "model": self.opts.model,
            "threshold": self.opts.threshold,
            "min_area": self.opts.min_area,
            "formats": list(self.opts.formats),
            "server": self.client.url,
            "counts": {
                "images": len(entries),
                **{s: statuses.count(s) for s in ("done", "failed", "cancelled", "rejected")},
                "skipped": len(self.skipped),
            },
            "objects": sum(e["objects"] or 0 for e in entries),
            "jobs": sorted({e["job_id"] for e in entries if e["job_id"]}),
            "images": entries,
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
        }
        outputs.write_atomic(out / "summary.json", outputs.json_bytes(summary))
        return report


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a task group (nested groups unwrapped)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
