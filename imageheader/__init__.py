"""Image headers of PNG, JPEG and TIFF files, read without decoding a pixel.

Shared by the gateway (``backend/imagecheck.py``, over an mmap of an upload) and the engine
(``ml_service/imaging/imageio.py``, over the bytes it decodes), so both accept and refuse the same
files.
Pure Python plus numpy and tifffile: it imports nothing of the project and no heavy library
(import-linter checks this), so the gateway may use it without pulling in torch.

Usage::

    header = read_header(data)                   # format, size, channels, dtype; or HeaderError
    ...                                          # the caller's pixel limit
    check_complete(data, header.format)          # nothing cut short; before decoding

Dimensions come from the PNG ``IHDR``/JPEG ``SOFn`` bytes directly rather than through Pillow,
whose ``Image.open`` applies its own global pixel limit and reports 16-bit RGB PNGs as 8-bit.
TIFF headers are read by tifffile (first page only).
"""

from imageheader.errors import (
    Corrupt,
    Degenerate,
    Empty,
    HeaderError,
    StackChoice,
    Truncated,
    UnknownFormat,
    UnsupportedPixels,
)
from imageheader.header import MIN_SIDE, SUPPORTED_FORMATS, Buffer, Header
from imageheader.read import check_complete, check_sides, detect_format, read_header
from imageheader.stack import Choice, Layout, choose, describe

__all__ = [
    "Choice",
    "Layout",
    "StackChoice",
    "check_sides",
    "choose",
    "describe",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "Buffer",
    "Corrupt",
    "Degenerate",
    "Empty",
    "Header",
    "HeaderError",
    "Truncated",
    "UnknownFormat",
    "UnsupportedPixels",
    "check_complete",
    "detect_format",
    "read_header",
]
