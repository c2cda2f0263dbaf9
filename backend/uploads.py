"""Storing the uploads of one request: content-addressed, atomic, all or nothing.

Life of an upload (:class:`UploadBatch`):

1. :meth:`~UploadBatch.begin` opens a temp file ``UPLOAD_DIR/.upload-*.part``;
   :meth:`~UploadBatch.write` appends streamed bytes while hashing (sha256) and counting them
   (413 ``upload_too_large`` as soon as the request's files exceed ``MAX_UPLOAD_MB``);
2. :meth:`~UploadBatch.end` fsyncs it and checks its header (:mod:`backend.imagecheck`);
3. :meth:`~UploadBatch.commit` runs the caller's row inserts in a transaction that also holds an
   advisory lock per blob, puts every temp into the blob store (:mod:`contracts.storage`,
   ``STORAGE_URL``; key ``<sha256>``, skipped when the store has it already: content
   addressed), then commits and removes the temps. A blob is thus stored before any committed
   row references it; a store that refuses the write answers 503 ``storage_unavailable`` and
   the transaction rolls back.
4. On any failure :meth:`~UploadBatch.discard` removes every temp file, and every blob this
   request put into the store that no committed ``images`` row references (another job may
   share the blob). It takes the same locks, so it never deletes a blob under a concurrent
   commit. If PostgreSQL or the store cannot be asked, blobs are kept (an orphan is harmless;
   a missing one is not) and logged.

``UPLOAD_DIR`` is the local spool for the temps (and, by default, the file store itself, so a
temp becomes its blob by a hard link, without a copy).

The user's file name is only ever stored in the database (:func:`safe_filename`), never used
on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import asyncpg
from starlette.concurrency import run_in_threadpool

from backend.errors import ApiError, PayloadTooLarge, ServiceUnavailable
from backend.imagecheck import ImageHeader, check_image
from contracts.db import repo
from contracts.storage import BlobStore, FileStore, StorageError, upload_key

log = logging.getLogger(__name__)

T = TypeVar("T")

TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
MAX_FILENAME_CHARS = 255
BLOB_MODE = 0o644
"""Permissions of stored uploads: workers may run as another user of the same group/host."""

_DRIVE = re.compile(r"^[A-Za-z]:")
_DOTS = re.compile(r"\.{2,}")


def safe_filename(raw: str | None, fallback: str) -> str:
    """A harmless display name for a user-supplied file name (stored, never used on disk).

    Keeps the base name only (``/`` and ``\\`` both separate; a ``C:`` drive is dropped),
    removes control and format characters, collapses ``..`` to ``.``, trims spaces and dots at
    the ends and caps the length (keeping the extension). Empty results become ``fallback``.

    >>> safe_filename("../../etc/passwd", "x")
    'passwd'
    >>> safe_filename("C:\\\\x\\\\y.png", "x")
    'y.png'
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _DRIVE.sub("", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _DOTS.sub(".", name).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name or fallback


@dataclass(frozen=True)
class StoredUpload:
    """One checked upload of the request, waiting in its temp file until commit."""

    seq: int
    filename: str
    sha256: str
    size_bytes: int
    header: ImageHeader
    temp_path: Path


class _OpenUpload:
    def __init__(self, seq: int, filename: str, upload_dir: Path) -> None:
        self.seq = seq
        self.filename = filename
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=upload_dir)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0


class UploadBatch:
    """The uploads of one request (see the module docstring). Not thread-safe; one per request.

    Args:
        upload_dir: ``UPLOAD_DIR``, the spool for temp files (must exist).
        max_total_bytes: cap on the sum of the request's file sizes.
        max_pixels: ``MAX_IMAGE_PIXELS``, for the header check.
        store: where committed blobs go (default: a file store in ``upload_dir``).
    """

    def __init__(
        self,
        upload_dir: Path,
        *,
        max_total_bytes: int,
        max_pixels: int,
        store: BlobStore | None = None,
    ) -> None:
        self.upload_dir = upload_dir
        self.store: BlobStore = store if store is not None else FileStore(upload_dir)
        self.max_total_bytes = max_total_bytes
        self.max_pixels = max_pixels
        self.files: list[StoredUpload] = []
        self.total_bytes = 0
        self.committed = False
        self._open: _OpenUpload | None = None
        self._temps: list[Path] = []  # every temp created, removed by discard()
        self._placed: list[str] = []  # blobs this request put into the store

    # --- streaming ---------------------------------------------------------------------------

    def begin(self, filename: str | None) -> None:
        """Start the next file (the previous one must have ended)."""
        if self._open is not None:
            raise RuntimeError("UploadBatch.begin() before end() of the previous file")
        seq = len(self.files)
        display = safe_filename(filename, f"image-{seq + 1}")
        try:
            self._open = _OpenUpload(seq, display, self.upload_dir)
        except OSError as exc:
            raise storage_unavailable(exc) from exc
        self._temps.append(self._open.path)

    def write(self, data: bytes) -> None:
        """Append bytes to the current file (blocking write of one network chunk).

        Raises:
            PayloadTooLarge: ``upload_too_large`` once the request's files exceed the cap.
        """
        up = self._open
        if up is None:
            raise RuntimeError("UploadBatch.write() outside begin()/end()")
        self.total_bytes += len(data)
        if self.total_bytes > self.max_total_bytes:
            raise about_file(upload_too_large(self.max_total_bytes), up.filename, up.seq)
        up.hash.update(data)
        try:
            up.file.write(data)
        except OSError as exc:
            raise storage_unavailable(exc) from exc
        up.size += len(data)

    async def end(self) -> StoredUpload:
        """Finish the current file: fsync, close and check its header (in a worker thread).

        Raises:
            ApiError: the header check's errors (see :func:`backend.imagecheck.check_image`).
        """
        up, self._open = self._open, None
        if up is None:
            raise RuntimeError("UploadBatch.end() without begin()")
        try:
            header = await run_in_threadpool(self._finish_file, up)
        except ApiError as exc:
            if isinstance(exc, ServiceUnavailable):
                raise
            raise about_file(exc, up.filename, up.seq) from None
        stored = StoredUpload(up.seq, up.filename, up.hash.hexdigest(), up.size, header, up.path)
        self.files.append(stored)
        return stored

    def _finish_file(self, up: _OpenUpload) -> ImageHeader:
        try:
            with up.file:
                up.file.flush()
                os.fchmod(up.file.fileno(), BLOB_MODE)  # mkstemp made it 0600
                os.fsync(up.file.fileno())
        except OSError as exc:
            raise storage_unavailable(exc) from exc
        return check_image(up.path, self.max_pixels)

    # --- commit / discard --------------------------------------------------------------------

    async def commit(
        self, pool: asyncpg.Pool, write_rows: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """Insert the rows (``write_rows(conn)``) and store the blobs, in one transaction.

        Raises:
            ServiceUnavailable: ``storage_unavailable`` when the store refuses a write (the
                transaction rolls back; :meth:`discard` cleans up).
        """
        if self._open is not None:
            raise RuntimeError("UploadBatch.commit() while a file is still open")
        async with pool.acquire() as conn:
            async with conn.transaction():
                await repo.lock_blobs(conn, [upload_key(f.sha256) for f in self.files])
                result = await write_rows(conn)
                await run_in_threadpool(self._place_all)
        self.committed = True
        await run_in_threadpool(self._remove_temps)
        return result

    def _place_all(self) -> None:
        done: set[str] = set()
        for f in self.files:
            key = upload_key(f.sha256)
            if key in done:
                continue
            try:
                if not self.store.exists(key):
                    self._placed.append(key)  # before the put: a half-failed put is undone too
                    self.store.put_file(key, f.temp_path)
            except StorageError as exc:
                raise storage_unavailable(exc) from exc
            done.add(key)

    async def discard(self, pool: asyncpg.Pool | None) -> None:
        """Undo everything of a request that did not commit (idempotent; never raises)."""
        if self.committed:
            return
        await run_in_threadpool(self._remove_temps)
        placed, self._placed = sorted(set(self._placed)), []
        if not placed:
            return
        if pool is None:
            log.warning("kept %d blob(s) of a failed upload: no database pool", len(placed))
            return
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await repo.lock_blobs(conn, placed)
                    referenced = await repo.referenced_uploads(conn, placed)
                    orphans = [key for key in placed if key not in referenced]
                    if orphans:
                        await run_in_threadpool(self.store.delete, orphans)
        except (OSError, StorageError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "kept %d blob(s) of a failed upload; cannot check references: %r",
                len(placed),
                exc,
            )

    def _remove_temps(self) -> None:
        if self._open is not None:
            self._open.file.close()
            self._open = None
        for path in self._temps:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # pragma: no cover - e.g. directory gone
                log.warning("cannot remove temp upload %s: %r", path, exc)
        self._temps.clear()


def about_file(exc: ApiError, filename: str, index: int) -> ApiError:
    """``exc`` naming the file it is about: the message starts with its name and position
    (1-based, as people count) and the JSON error carries ``file`` and ``index`` (0-based, the
    position of its part among the request's files)."""
    if "file" not in exc.details:
        where = f"{filename} (file {index + 1})"
        if exc.message.startswith(filename + " "):  # "a.tif holds ...": named already
            exc.message = where + exc.message[len(filename) :]
        else:
            exc.message = f"{where}: {exc.message}"
        exc.args = (exc.message,)
        exc.details.update(file=filename, index=index)
    return exc


def upload_too_large(max_total_bytes: int) -> PayloadTooLarge:
    mb = max_total_bytes // (1024 * 1024)
    return PayloadTooLarge(
        "upload_too_large",
        f"the upload exceeds the limit of {mb} MB per request (MAX_UPLOAD_MB); "
        "send fewer or smaller files per job",
    )


def storage_unavailable(exc: OSError | StorageError) -> ServiceUnavailable:
    """503 for a failing spool (``UPLOAD_DIR``: full disk, permissions, missing directory) or
    blob store (``STORAGE_URL``: unreachable, bucket missing or refusing)."""
    if isinstance(exc, StorageError):
        where = f"the blob store (STORAGE_URL): {exc}"
    else:
        where = f"UPLOAD_DIR: {exc.strerror or exc}"
    return ServiceUnavailable(
        "storage_unavailable", f"cannot store the upload in {where}", retry_after=30
    )


def sweep_stale_temps(upload_dir: Path, older_than_s: float = 3600.0) -> int:
    """Remove temp uploads left by a crashed process (older than ``older_than_s``, so uploads
    in flight in other replicas are spared), also in subdirectories (the file store's
    ``masks/``, whose temps share the name). Returns how many were removed."""
    removed = 0
    cutoff = time.time() - older_than_s
    for path in upload_dir.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
