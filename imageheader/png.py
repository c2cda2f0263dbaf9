"""PNG: the ``IHDR`` header, and the chunk walk from it to ``IEND``."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from imageheader.errors import Corrupt, HeaderError, Truncated
from imageheader.header import Buffer, Header

MAGIC = b"\x89PNG\r\n\x1a\n"

# colour type -> (channels decoded without / with a tRNS chunk, allowed bit depths)
_COLOUR_TYPES: dict[int, tuple[int, int, tuple[int, ...]]] = {
    0: (1, 1, (1, 2, 4, 8, 16)),  # grey; decoders ignore tRNS here
    2: (3, 4, (8, 16)),  # RGB
    3: (3, 4, (1, 2, 4, 8)),  # palette
    4: (4, 4, (8, 16)),  # grey + alpha, decoded as RGBA
    6: (4, 4, (8, 16)),  # RGBA
}


def header(data: Buffer) -> Header:
    """Parse ``IHDR`` and look for a ``tRNS`` chunk before the first ``IDAT``.

    A chunk cut short after ``IHDR`` is not reported here but by :func:`check_complete`, so that
    a caller can refuse an oversized image first.

    Raises:
        Truncated: the file ends inside ``IHDR``.
        Corrupt: the first chunk is not ``IHDR``, or its colour type and bit depth do not match.
    """
    if len(data) < 33:
        raise Truncated("truncated PNG: the file ends inside the IHDR header")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise Corrupt("corrupt PNG: the first chunk is not a valid IHDR")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _COLOUR_TYPES or depth not in _COLOUR_TYPES[colour][2]:
        raise Corrupt(f"corrupt PNG: invalid colour type {colour} with bit depth {depth}")
    has_trns = False
    try:
        for ctype in _chunks(data, check_crc=False):  # tRNS must precede IDAT: stops early
            if ctype in (b"tRNS", b"IDAT", b"IEND"):
                has_trns = ctype == b"tRNS"
                break
    except HeaderError:
        pass  # reported by check_complete
    plain, with_trns, _ = _COLOUR_TYPES[colour]
    channels = with_trns if has_trns else plain
    return Header("png", width, height, channels, "uint16" if depth == 16 else "uint8", depth)


def check_complete(data: Buffer, check_crc: bool) -> None:
    """Walk every chunk up to ``IEND``, which must lie in the file after an ``IDAT``.

    Raises:
        Truncated: the file ends before ``IEND``.
        Corrupt: an invalid chunk length, a CRC mismatch (when ``check_crc``), or no ``IDAT``.
    """
    seen_idat = False
    for ctype in _chunks(data, check_crc):
        seen_idat = seen_idat or ctype == b"IDAT"
    if not seen_idat:
        raise Corrupt("corrupt PNG: no IDAT (pixel data) chunk")


def _chunks(data: Buffer, check_crc: bool) -> Iterator[bytes]:
    """Yield each chunk's type from ``IHDR`` to ``IEND``; raise on a cut or corrupt one."""
    size, pos = len(data), len(MAGIC)
    while True:
        if pos + 8 > size:
            raise Truncated("truncated PNG: the file ends before the IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        name = ctype.decode("latin-1")
        if length > 0x7FFFFFFF:
            raise Corrupt(f"corrupt PNG: chunk {name!r} has an invalid length")
        end = pos + 12 + length
        if end > size:
            raise Truncated(f"truncated PNG: chunk {name!r} is cut short")
        if check_crc:
            (crc,) = struct.unpack(">I", data[end - 4 : end])
            with memoryview(data) as view:  # no copy of the chunk; released before return
                actual = zlib.crc32(view[pos + 4 : end - 4])
            if actual != crc:
                raise Corrupt(f"corrupt PNG: CRC mismatch in chunk {name!r}")
        yield ctype
        if ctype == b"IEND":
            return
        pos = end
