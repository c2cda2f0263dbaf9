"""Small synthetic image files for the gateway tests (bytes, built in memory)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import tifffile
from PIL import Image

_rng = np.random.default_rng(1234)


def noise(height: int = 24, width: int = 32, channels: int = 3) -> np.ndarray:
    """Random uint8 pixels: every call gives different bytes (so a different sha256)."""
    shape = (height, width, channels) if channels > 1 else (height, width)
    return _rng.integers(0, 256, size=shape, dtype=np.uint8)


def png(height: int = 24, width: int = 32, channels: int = 3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(height, width, channels)).save(buf, format="PNG")
    return buf.getvalue()


def png16(height: int = 16, width: int = 16) -> bytes:
    """16-bit greyscale PNG."""
    arr = _rng.integers(0, 65536, size=(height, width), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(height: int = 24, width: int = 32, channels: int = 3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(height, width, channels)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiff(array: np.ndarray | None = None, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, noise(24, 32, 1) if array is None else array, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(8, 8, 3)).convert("P").save(buf, format="GIF")
    return buf.getvalue()


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(ctype)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def png_claiming(width: int, height: int, colour: int = 0, depth: int = 8) -> bytes:
    """A complete, tiny PNG whose IHDR claims ``width x height`` (pixels never allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def mask_png(height: int = 24, width: int = 32) -> bytes:
    """A 16-bit label image like the workers store."""
    labels = np.zeros((height, width), dtype=np.uint16)
    labels[2:6, 3:9] = 1
    buf = io.BytesIO()
    Image.fromarray(labels).save(buf, format="PNG")
    return buf.getvalue()
