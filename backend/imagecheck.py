"""Gateway-side check of an uploaded image from its header, without decoding a pixel.

The gateway may not import the engine (``ml_service``), so this module mirrors the engine's
header rules (``ml_service/imageio.py``) closely enough that what passes here decodes there;
whatever slips through still fails that image alone, inside the worker, with a reason.

In order, :func:`check_image` refuses:

1. an empty file: 422 ``empty_file``;
2. a format other than PNG, JPEG or TIFF (by magic bytes): 415 ``unsupported_format``;
3. a corrupt header, a degenerate size (width or height < 2) or a pixel type the engine does not
   read (e.g. 2 or more than 4 channels, 12-bit JPEG, int32/complex TIFF): 422 ``invalid_image``;
4. more than ``max_pixels`` pixels: 413 ``image_too_large``;
5. a truncated file: 422 ``invalid_image``. PNG: the chunk walk must reach ``IEND`` inside the
   file (and have seen ``IDAT``); JPEG: an end-of-image marker (``FFD9``) must follow the first
   scan (0xFF is byte-stuffed inside entropy-coded data, so any ``FFD9`` after it is the EOI;
   trailing padding after it is allowed); TIFF: the first page's strips/tiles lie in the file.

Dimensions are parsed from the PNG ``IHDR``/JPEG ``SOFn`` bytes directly rather than through
Pillow: Pillow's ``Image.open`` refuses images above its own global pixel limit (which would
override ``MAX_IMAGE_PIXELS``) and reports 16-bit RGB PNGs as 8-bit. TIFF headers are read by
tifffile (first page only; pixel data is never read).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile

from backend.errors import ApiError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

T = TypeVar("T")

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff")
MIN_SIDE = 2

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

# PNG colour type -> (channels decoded without / with a tRNS chunk, allowed bit depths)
_PNG_COLOUR_TYPES: dict[int, tuple[int, int, tuple[int, ...]]] = {
    0: (1, 1, (1, 2, 4, 8, 16)),  # grey
    2: (3, 4, (8, 16)),  # RGB
    3: (3, 4, (1, 2, 4, 8)),  # palette
    4: (4, 4, (8, 16)),  # grey + alpha, decoded as RGBA
    6: (4, 4, (8, 16)),  # RGBA
}
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}
_TIFF_PHOTOMETRIC = {
    tifffile.PHOTOMETRIC.MINISWHITE,
    tifffile.PHOTOMETRIC.MINISBLACK,
    tifffile.PHOTOMETRIC.RGB,
    tifffile.PHOTOMETRIC.YCBCR,
}


@dataclass(frozen=True)
class ImageHeader:
    """What an upload's header says.

    Attributes:
        format: ``"png"``, ``"jpeg"`` or ``"tiff"``.
        width, height: pixels.
        channels: channels of the decoded image: 1 (grey), 3 (RGB) or 4 (RGBA).
        bit_depth: bits per sample as stored (PNG IHDR depth, JPEG precision, TIFF
            BitsPerSample).
    """

    format: str
    width: int
    height: int
    channels: int
    bit_depth: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed("invalid_image", message)


def detect_format(head: bytes) -> str:
    """Name the format from the first bytes of a file (at least 8 when the file has them).

    Raises:
        ValidationFailed: ``empty_file`` when ``head`` is empty.
        UnsupportedMediaType: ``unsupported_format`` for anything but PNG, JPEG, TIFF.
    """
    if not head:
        raise ValidationFailed("empty_file", "the file is empty")
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if len(head) < len(_PNG_MAGIC) and any(
        magic.startswith(head) for magic in (_PNG_MAGIC, _JPEG_MAGIC, *_TIFF_MAGICS)
    ):
        raise _invalid("truncated image: the file ends inside its signature")
    raise UnsupportedMediaType(
        "unsupported_format",
        "unsupported image format; supported formats: PNG, JPEG, TIFF",
    )


def check_image(path: Path, max_pixels: int) -> ImageHeader:
    """Check one stored upload from its header (see the module docstring for the rules).

    Blocking file IO: call it from a worker thread in async code.

    Raises:
        ApiError: ``empty_file`` (422), ``unsupported_format`` (415), ``invalid_image`` (422),
            ``image_too_large`` (413).
    """
    with open(path, "rb") as f:
        fmt = detect_format(f.read(8))
        if fmt == "tiff":
            return _check_tiff(path, max_pixels)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if fmt == "png":
                return _check_png(data, max_pixels)
            return _check_jpeg(data, max_pixels)


def _check_size(header: ImageHeader, max_pixels: int) -> None:
    if header.width < MIN_SIDE or header.height < MIN_SIDE:
        raise _invalid(
            f"degenerate image size {header.width}x{header.height}: width and height must be "
            f"at least {MIN_SIDE} pixels"
        )
    if header.pixels > max_pixels:
        raise PayloadTooLarge(
            "image_too_large",
            f"image is {header.width}x{header.height} = {header.pixels} pixels; the limit "
            f"(MAX_IMAGE_PIXELS) is {max_pixels} pixels",
        )


# --- PNG ---------------------------------------------------------------------------------------


def _check_png(data: mmap.mmap, max_pixels: int) -> ImageHeader:
    size = len(data)
    if size < 33:
        raise _invalid("truncated PNG: the file ends inside the IHDR header")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise _invalid("corrupt PNG: the first chunk is not a valid IHDR")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_COLOUR_TYPES or depth not in _PNG_COLOUR_TYPES[colour][2]:
        raise _invalid(f"corrupt PNG: invalid colour type {colour} with bit depth {depth}")
    has_trns, problem = _walk_png(data)
    plain, with_trns, _ = _PNG_COLOUR_TYPES[colour]
    header = ImageHeader("png", width, height, with_trns if has_trns else plain, depth)
    _check_size(header, max_pixels)
    if problem:
        raise _invalid(problem)
    return header


def _walk_png(data: mmap.mmap) -> tuple[bool, str | None]:
    """Walk chunk lengths from IHDR to IEND: ``(has tRNS before IDAT, problem or None)``."""
    size, pos = len(data), len(_PNG_MAGIC)
    has_trns = seen_idat = False
    while True:
        if pos + 8 > size:
            return has_trns, "truncated PNG: the file ends before the IEND chunk"
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 0x7FFFFFFF:
            return has_trns, f"corrupt PNG: chunk {ctype!r} has an invalid length"
        end = pos + 12 + length
        if end > size:
            return has_trns, f"truncated PNG: chunk {ctype.decode('latin-1')!r} is cut short"
        if ctype == b"tRNS" and not seen_idat:
            has_trns = True
        elif ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            return has_trns, None if seen_idat else "corrupt PNG: no IDAT (pixel data) chunk"
        pos = end


# --- JPEG --------------------------------------------------------------------------------------


def _check_jpeg(data: mmap.mmap, max_pixels: int) -> ImageHeader:
    frame, first_scan = _jpeg_frame(data)
    precision, height, width, components = frame
    header = ImageHeader("jpeg", width, height, 1 if components == 1 else 3, precision)
    if precision != 8:
        raise _invalid(f"{precision}-bit JPEG is not supported; only 8-bit JPEG")
    if components not in (1, 3, 4):
        raise _invalid(f"JPEG with {components} components is not supported (1, 3 or 4)")
    _check_size(header, max_pixels)
    if data.rfind(b"\xff\xd9", first_scan) < 0:
        raise _invalid("truncated JPEG: no end-of-image marker after the image data")
    return header


def _jpeg_frame(data: mmap.mmap) -> tuple[tuple[int, int, int, int], int]:
    """Walk markers to the first scan: ``((precision, height, width, components), SOS offset)``."""
    size, pos = len(data), 2
    frame: tuple[int, int, int, int] | None = None
    while True:
        pos = data.find(b"\xff", pos)  # tolerate garbage between segments, as libjpeg does
        if pos < 0:
            raise _invalid("truncated JPEG: the file ends before the image data")
        while pos < size and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= size:
            raise _invalid("truncated JPEG: the file ends before the image data")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise _invalid("corrupt JPEG: end of image before any image data")
        if pos + 2 > size:
            raise _invalid("truncated JPEG: a segment header is cut short")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > size:
            raise _invalid(f"truncated JPEG: segment 0xFF{marker:02X} is cut short")
        if marker in _JPEG_SOF:
            if length < 8:
                raise _invalid("corrupt JPEG: start-of-frame segment too short")
            p, h, w, c = struct.unpack(">BHHB", data[pos + 2 : pos + 8])
            frame = (p, h, w, c)
        if marker == 0xDA:
            if frame is None:
                raise _invalid("corrupt JPEG: image data before any start-of-frame segment")
            return frame, pos - 1
        pos += length


# --- TIFF --------------------------------------------------------------------------------------


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


def _check_tiff(path: Path, max_pixels: int) -> ImageHeader:
    size = path.stat().st_size
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise _invalid(f"corrupt TIFF: {exc}") from exc
    with tif:
        page = _tiff_read(lambda: tif.pages.first)
        if not isinstance(page, tifffile.TiffPage):
            raise _invalid("corrupt TIFF: the first page is not a readable image")
        header = _tiff_header(tif, page)
        _check_size(header, max_pixels)
        # strip/tile tables are read only now, after the size check
        offsets = _tiff_read(lambda: list(page.dataoffsets))
        counts = _tiff_read(lambda: list(page.databytecounts))
    if not offsets or not any(counts):
        raise _invalid("corrupt TIFF: the first page has no pixel data")
    if any(off + n > size for off, n in zip(offsets, counts, strict=False)):
        raise _invalid("truncated TIFF: pixel data runs past the end of the file")
    return header


def _tiff_read(read: Callable[[], T]) -> T:
    try:
        return read()
    except ApiError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise _invalid(f"corrupt TIFF: cannot read the first page: {exc}") from exc


def _tiff_header(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> ImageHeader:
    planes = _z_planes(tif)
    separate, depth, height, width, contig = _tiff_read(lambda: page.shaped)
    if planes > 1 or depth > 1:
        raise _invalid(
            f"TIFF is a 3D stack with {max(planes, depth)} z-planes; send a single 2D plane"
        )
    photometric = _tiff_read(lambda: page.photometric)
    if photometric not in _TIFF_PHOTOMETRIC:
        raise _invalid(
            f"TIFF photometric {_name(photometric)} is not supported; supported: grey, RGB, YCbCr"
        )
    channels = separate * contig
    if channels not in (1, 3, 4):
        raise _invalid(
            f"TIFF with {channels} samples per pixel is not supported; "
            "supported: 1 (grey), 3 (RGB), 4 (RGBA)"
        )
    dtype, bits = _tiff_read(lambda: (page.dtype, page.bitspersample))
    if dtype is None or not (dtype.kind == "f" or dtype in (np.uint8, np.uint16)):
        kind = dtype.name if dtype is not None else f"{bits}-bit"
        raise _invalid(f"TIFF pixel type {kind} is not supported; supported: uint8, uint16, float")
    return ImageHeader("tiff", int(width), int(height), channels, int(bits))


def _z_planes(tif: tifffile.TiffFile) -> int:
    """Number of z-planes declared by ImageJ or OME metadata (1 when none)."""
    try:
        if tif.is_imagej:
            return int((tif.imagej_metadata or {}).get("slices", 1))
        if tif.is_ome:
            series = tif.series[0]
            if "Z" in series.axes:
                return int(series.shape[series.axes.index("Z")])
    except Exception:  # unreadable metadata: treat as a plain multi-page file
        return 1
    return 1
