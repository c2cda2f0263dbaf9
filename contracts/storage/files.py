"""The file store: objects as files under a root directory, written atomically."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contracts.storage.base import (
    BLOB_MODE,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    BlobNotFound,
    StorageUnavailable,
    check_key,
)


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
