"""The load tester's images: drawn cell-like PNGs, or the images of a folder.

The load tester is a client of the service, so it makes its own images (numpy and the
standard library's zlib) instead of borrowing the engine's training generator.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


def cells_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size)`` uint8 fluorescence-like image: bright discs on a dark, noisy field.

    Between 4 and 4 + size // 16 discs of radius 6-20 px (some touching) on a background of
    about 20 with Gaussian noise (sigma 6).
    """
    if size < 32:
        raise ValueError(f"image side must be at least 32 px, got {size}")
    yy, xx = np.mgrid[0:size, 0:size]
    signal = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(4, 5 + size // 16))):
        radius = float(rng.uniform(6, 20))
        cy, cx = rng.uniform(radius, size - radius, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        signal[inside] = np.maximum(signal[inside], float(rng.uniform(120, 220)))
    image = 20.0 + signal + rng.normal(0.0, 6.0, signal.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a 2-D uint8 array as an 8-bit greyscale PNG."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 array, got {image.ndim}-D {image.dtype}")
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1)  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def synthetic_images(n: int, size: int, folder: Path, seed: int = 0) -> list[Path]:
    """Write ``n`` drawn ``size`` x ``size`` PNGs into ``folder`` and return their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"synthetic-{i:04d}.png"
        path.write_bytes(png_bytes(cells_image(rng, size)))
        paths.append(path)
    return paths


def folder_images(folder: Path, n: int) -> list[Path]:
    """``n`` image paths from ``folder`` (recursively, sorted), repeating them if needed."""
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise SystemExit(f"no images in {folder}")
    return [found[i % len(found)] for i in range(n)]
