"""JPEG: the marker walk to the first scan (``SOFn`` frame header), and the end-of-image."""

from __future__ import annotations

import struct

from imageheader.errors import Corrupt, Truncated, UnsupportedPixels
from imageheader.header import Buffer, Header

MAGIC = b"\xff\xd8\xff"

# start-of-frame markers: every SOFn but DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


def header(data: Buffer) -> Header:
    """Parse the frame header of the first ``SOFn`` before the first scan.

    Raises:
        Truncated: the file ends before the first scan.
        Corrupt: end of image or a scan before any frame header, or a short frame header.
        UnsupportedPixels: a precision other than 8 bits, or not 1, 3 or 4 components.
    """
    (precision, height, width, components), _ = _first_scan(data)
    if precision != 8:
        raise UnsupportedPixels(f"{precision}-bit JPEG is not supported; only 8-bit JPEG")
    if components not in (1, 3, 4):
        raise UnsupportedPixels(f"JPEG with {components} components is not supported (1, 3 or 4)")
    return Header("jpeg", width, height, 1 if components == 1 else 3, "uint8", precision)


def check_complete(data: Buffer) -> None:
    """An end-of-image marker must follow the first scan.

    0xFF is byte-stuffed inside entropy-coded data, so any ``FFD9`` after the first scan is the
    EOI (a thumbnail's EOI lies before it); trailing bytes after it are allowed.

    Raises:
        Truncated: no end-of-image marker after the first scan.
    """
    _, first_scan = _first_scan(data)
    if data.rfind(b"\xff\xd9", first_scan) < 0:
        raise Truncated("truncated JPEG: no end-of-image marker after the image data")


def _first_scan(data: Buffer) -> tuple[tuple[int, int, int, int], int]:
    """Walk markers to the first scan: ``((precision, height, width, components), SOS offset)``."""
    size, pos = len(data), 2
    frame: tuple[int, int, int, int] | None = None
    while True:
        pos = data.find(b"\xff", pos)  # tolerate garbage between segments, as libjpeg does
        if pos < 0:
            raise Truncated("truncated JPEG: the file ends before the image data")
        while pos < size and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= size:
            raise Truncated("truncated JPEG: the file ends before the image data")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:
            raise Corrupt("corrupt JPEG: end of image before any image data")
        if pos + 2 > size:
            raise Truncated("truncated JPEG: a segment header is cut short")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > size:
            raise Truncated(f"truncated JPEG: segment 0xFF{marker:02X} is cut short")
        if marker in _SOF:
            if length < 8:
                raise Corrupt("corrupt JPEG: start-of-frame segment too short")
            p, h, w, c = struct.unpack(">BHHB", data[pos + 2 : pos + 8])
            frame = (p, h, w, c)
        if marker == 0xDA:
            if frame is None:
                raise Corrupt("corrupt JPEG: image data before any start-of-frame segment")
            return frame, pos - 1
        pos += length
