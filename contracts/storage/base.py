"""The blob store's seam: keys, the store protocol, typed errors and ``STORAGE_URL``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
"""Temp files of the file store: named like the gateway's upload spool, so the start-up sweep
(:func:`backend.uploads.sweep_stale_temps`) also removes the ones a crash left behind."""

BLOB_MODE = 0o644
"""Permissions of stored objects in the file store: readable by workers of the same host/group."""

MASKS = "masks/"
PREVIEWS = "previews/"
DEFAULT_REGION = "us-east-1"
S3_DELETE_CHUNK = 1000  # DeleteObjects takes at most 1000 keys

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageError(Exception):
    """A blob store operation failed; ``key`` names the object when there is one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class BlobNotFound(StorageError):
    """The object does not exist."""


class StorageUnavailable(StorageError):
    """The store cannot be used now (disk, permissions, network, bucket): retry later."""


class InvalidStorageUrl(ValueError):
    """``STORAGE_URL`` is not ``file:///path`` or ``s3://bucket[/prefix]``."""


def upload_key(sha256: str) -> str:
    """Key of an upload: its content hash (``UPLOAD_DIR/<sha256>`` in the default store)."""
    return sha256


def mask_key(sha256: str) -> str:
    """Key of a label mask: ``masks/<sha256 of the PNG>``."""
    return MASKS + sha256


def preview_key(sha256: str) -> str:
    """Key of an image's preview: ``previews/<sha256 of the PNG>``."""
    return PREVIEWS + sha256


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key (no ``..``, no leading ``/``); else ValueError."""
    if not _KEY_RE.match(key) or ".." in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    """A content-addressed object store (see the module docstring). Blocking methods."""

    @property
    def url(self) -> str:
        """Where the store is, without credentials (for logs and messages)."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` (left in place) as ``key``, atomically."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key``, atomically."""
        ...

    def exists(self, key: str) -> bool: ...

    def get(self, key: str) -> bytes:
        """The object's bytes. Raises :class:`BlobNotFound` when it does not exist."""
        ...

    def delete(self, keys: Iterable[str]) -> int:
        """Delete these objects (missing ones are skipped); returns how many were asked for."""
        ...

    def close(self) -> None: ...


# --- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageLocation:
    """A parsed ``STORAGE_URL``: ``scheme`` ``file`` (``path``) or ``s3`` (``bucket``,
    ``prefix``)."""

    scheme: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def url(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_storage_url(url: str) -> StorageLocation:
    """Parse ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    Raises:
        InvalidStorageUrl: unknown scheme, relative or empty path, missing or malformed bucket,
            unsafe prefix.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidStorageUrl(
                f"file URL {url!r} names a host; use file:///absolute/path (three slashes)"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise InvalidStorageUrl(f"file URL {url!r} needs an absolute directory path")
        return StorageLocation("file", path=Path(path))
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise InvalidStorageUrl(f"S3 URL {url!r} names no bucket; use s3://bucket/prefix")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise InvalidStorageUrl(
                f"S3 bucket {bucket!r} is not a valid bucket name "
                "(3-63 characters: lower-case letters, digits, '.' and '-')"
            )
        prefix = unquote(parts.path).strip("/")
        if prefix:
            try:
                check_key(prefix)
            except ValueError:
                raise InvalidStorageUrl(f"S3 prefix {prefix!r} of {url!r} is not safe") from None
        if parts.query or parts.fragment:
            raise InvalidStorageUrl(f"S3 URL {url!r} must not carry a query or fragment")
        return StorageLocation("s3", bucket=bucket, prefix=prefix)
    raise InvalidStorageUrl(
        f"unknown storage scheme {parts.scheme!r} in {url!r}; use file:///path or s3://bucket/prefix"
    )
