"""The S3 store: objects in any S3-compatible bucket through boto3."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from contracts.storage.base import (
    DEFAULT_REGION,
    S3_DELETE_CHUNK,
    BlobNotFound,
    StorageUnavailable,
    check_key,
)

_S3_MISSING = {"404", "NoSuchKey", "NotFound"}
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
