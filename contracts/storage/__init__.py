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

from contracts.storage.base import (
    BLOB_MODE,
    DEFAULT_REGION,
    MASKS,
    PREVIEWS,
    S3_DELETE_CHUNK,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    BlobNotFound,
    BlobStore,
    InvalidStorageUrl,
    StorageError,
    StorageLocation,
    StorageUnavailable,
    check_key,
    mask_key,
    parse_storage_url,
    preview_key,
    upload_key,
)
from contracts.storage.files import FileStore
from contracts.storage.s3 import S3Store

__all__ = [
    "BLOB_MODE",
    "BlobNotFound",
    "BlobStore",
    "DEFAULT_REGION",
    "FileStore",
    "InvalidStorageUrl",
    "MASKS",
    "PREVIEWS",
    "S3Store",
    "S3_DELETE_CHUNK",
    "StorageError",
    "StorageLocation",
    "StorageUnavailable",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "check_key",
    "mask_key",
    "open_store",
    "parse_storage_url",
    "preview_key",
    "upload_key",
]


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
