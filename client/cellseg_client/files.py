"""Local image files: finding them (recursive, by type), recognising them, hashing them."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "tiff": "image/tiff"}
SUFFIXES: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
}
"""File name suffixes (lower case) taken from folders, and the format each should hold."""

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)
HASH_CHUNK = 1 << 20


def sniff(path: Path) -> str | None:
    """``"png"``, ``"jpeg"`` or ``"tiff"`` from the file's first bytes; None for anything else
    (or an unreadable file)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    return None


def content_type(path: Path) -> str:
    fmt = sniff(path) or SUFFIXES.get(path.suffix.lower())
    return CONTENT_TYPES.get(fmt or "", "application/octet-stream")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's content (what the manifest keys uploads by)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LocalImage:
    """An image to upload: its ``path``, size, and ``rel``, its path relative to the folder
    it was found in (its own name when given directly), which names its outputs."""

    path: Path
    size: int
    rel: PurePosixPath


@dataclass
class Found:
    """Images found (sorted by ``rel`` within each input) and what was skipped, with why."""

    images: list[LocalImage] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _walk(root: Path, exclude: set[Path]) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in exclude
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def _classify(path: Path, by_suffix: bool) -> str | None:
    """None when ``path`` is an image to take, else the reason to skip it."""
    expected = SUFFIXES.get(path.suffix.lower())
    if by_suffix and expected is None:
        return f"not an image type (suffix {path.suffix or 'none'!r}; PNG, JPEG, TIFF only)"
    found = sniff(path)
    if found is None:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            return "unreadable"
        return "the file is empty" if empty else "content is not PNG, JPEG or TIFF"
    return None


def find_images(inputs: Sequence[str | Path], exclude: Sequence[Path] = ()) -> Found:
    """Images under ``inputs``: folders are searched recursively for ``*.png``, ``*.jpg``,
    ``*.jpeg``, ``*.tif``, ``*.tiff`` (any case; hidden files and folders and ``exclude``
    skipped); files given directly are taken whatever their name if their content is an image.
    Files whose content is not PNG/JPEG/TIFF are skipped with a reason.

    Raises:
        FileNotFoundError: an input does not exist.
    """
    found = Found()
    excluded = {p.resolve() for p in exclude}
    for raw in inputs:
        item = Path(raw)
        if item.is_dir():
            candidates = [
                (p, PurePosixPath(p.relative_to(item).as_posix())) for p in _walk(item, excluded)
            ]
            by_suffix = True
        elif item.is_file():
            candidates = [(item, PurePosixPath(item.name))]
            by_suffix = False
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
        for path, rel in candidates:
            reason = _classify(path, by_suffix)
            if reason is None:
                found.images.append(LocalImage(path, path.stat().st_size, rel))
            else:
                found.skipped.append((path, reason))
    return found
