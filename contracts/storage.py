"""Where uploads and result masks live: a content-addressed blob store behind one small seam.

``STORAGE_URL`` picks the store (:func:`open_store`):

- ``file:///path`` (default ``file://<UPLOAD_DIR>``): a local or shared volume. An object is
  the file ``/path/<key>``, written to a temp file beside it, fsynced, renamed into place
  (readable by the group: workers may run as another user) and the directory fsynced.
- ``s3://bucket/prefix``: any S3-compatible store through boto3. The object is
  ``prefix/<key>``; endpoint, credentials and region come from the usual ``AWS_*`` variables
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ...; boto3's own
  chain, so profiles and instance roles work too). A PUT is atomic in S3: readers see the whole
  object or none; a failed multipart upload is aborted.

Keys are content addresses: :func:`upload_key` (``<sha256>`` of the upload) and
:func:`mask_key` (``masks/<sha256>`` of the PNG). Writing an existing key again writes the same
bytes, so concurrent puts of one key are harmless and callers skip a put when the key exists.
Who may delete a key is decided in PostgreSQL (:func:`contracts.db.repo.lock_blobs`), never here.

Every method blocks (disk or network): async code calls them in a thread. Errors are typed:
:class:`BlobNotFound` for a missing object, :class:`StorageUnavailable` for everything else
(disk full, permissions, S3 unreachable, bucket missing or refusing). This module is shared by
the gateway and the workers: it imports no FastAPI.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

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
_S3_MISSING = {"404", "NoSuchKey", "NotFound"}


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


def open_store(url: str, *, region: str | None = None) -> BlobStore:
    """The store ``url`` names (see :func:`parse_storage_url`).

    Args:
        url: ``STORAGE_URL`` (``Settings.storage_location``).
        region: S3 region (``AWS_REGION``/``AWS_DEFAULT_REGION``); boto3's default, else
            ``us-east-1``, when None.
    """
    loc = parse_storage_url(url)
    if loc.path is not None:
        return FileStore(loc.path)
    return S3Store.connect(loc.bucket, loc.prefix, region=region)


# --- the file store ------------------------------------------------------------------------------


class FileStore:
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {self.root}: {_reason(exc)}") from exc

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        self._write(key, target, lambda tmp: _link_or_copy(Path(path), tmp))

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)

        def write(tmp: Path) -> None:
            with open(tmp, "xb") as f:
                f.write(data)

        self._write(key, target, write)

    def _write(self, key: str, target: Path, fill: Any) -> None:
        tmp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fill(tmp)
            os.chmod(tmp, BLOB_MODE)
            _fsync_path(tmp)
            os.replace(tmp, target)
            _fsync_path(target.parent)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StorageUnavailable(
                f"cannot write {key} to {self.root}: {_reason(exc)}", key
            ) from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except OSError as exc:  # pragma: no cover - e.g. permissions on the directory
            raise StorageUnavailable(f"cannot stat {key}: {_reason(exc)}", key) from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(f"{key} is not in {self.root}", key) from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key}: {_reason(exc)}", key) from exc

    def delete(self, keys: Iterable[str]) -> int:
        n = 0
        for key in keys:
            try:
                self.path(key).unlink(missing_ok=True)
            except OSError as exc:
                raise StorageUnavailable(f"cannot delete {key}: {_reason(exc)}", key) from exc
            n += 1
        return n

    def close(self) -> None:
        pass


def _link_or_copy(source: Path, tmp: Path) -> None:
    """Hard-link ``source`` as ``tmp`` (same volume: no copy), else copy it."""
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- the S3 store --------------------------------------------------------------------------------

_BOTO_ERRORS = (ClientError, BotoCoreError, Boto3Error)


class S3Store:
    """Objects under ``s3://bucket/prefix/`` through a boto3 client (thread-safe)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self._transfer = TransferConfig(
            multipart_threshold=16 * 1024 * 1024,
            multipart_chunksize=16 * 1024 * 1024,
            max_concurrency=4,
        )

    @classmethod
    def connect(cls, bucket: str, prefix: str = "", *, region: str | None = None) -> S3Store:
        """A store with a boto3 client configured from the environment (``AWS_*``).

        Checksums are only sent where S3 requires them, so stores that do not implement the
        newer default (CRC trailers) work too; short timeouts and 3 attempts keep a request
        that finds the store down from hanging.
        """
        session = boto3.session.Session()
        config = BotoConfig(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = session.client(
            "s3", region_name=region or session.region_name or DEFAULT_REGION, config=config
        )
        return cls(bucket, prefix, client)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> None:
        name = self.object_name(key)
        try:
            self.client.upload_file(str(path), self.bucket, name, Config=self._transfer)
        except (*_BOTO_ERRORS, OSError) as exc:
            raise self._unavailable("write", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self.object_name(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
        except _BOTO_ERRORS as exc:
            raise self._unavailable("write", key, exc) from exc

    def exists(self, key: str) -> bool:
        name = self.object_name(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in _S3_MISSING:
                return False
            raise self._unavailable("check", key, exc) from exc
        except _BOTO_ERRORS as exc:
            raise self._unavailable("check", key, exc) from exc
        return True

    def get(self, key: str) -> bytes:
        name = self.object_name(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=name)
            data: bytes = response["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in _S3_MISSING:
                raise BlobNotFound(f"{key} is not in {self.url}", key) from exc
            raise self._unavailable("read", key, exc) from exc
        except _BOTO_ERRORS as exc:
            raise self._unavailable("read", key, exc) from exc
        return data

    def delete(self, keys: Iterable[str]) -> int:
        names = [self.object_name(k) for k in keys]
        for chunk in _chunks(names, S3_DELETE_CHUNK):
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": n} for n in chunk], "Quiet": True},
                )
            except _BOTO_ERRORS as exc:
                raise self._unavailable("delete", None, exc) from exc
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageUnavailable(
                    f"cannot delete {len(errors)} object(s) from {self.url}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip(),
                    first.get("Key"),
                )
        return len(names)

    def close(self) -> None:
        self.client.close()

    def _unavailable(self, what: str, key: str | None, exc: BaseException) -> StorageUnavailable:
        target = f"{key} in {self.url}" if key else self.url
        return StorageUnavailable(f"cannot {what} {target}: {_boto_reason(exc)}", key)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _boto_reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip().rstrip(":")
    return str(exc) or type(exc).__name__


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
