"""TIFF: the first page's header through tifffile (pixel data is never read here)."""

from __future__ import annotations

import io
import mmap
from collections.abc import Callable
from typing import IO, TypeVar, cast

import numpy as np
import tifffile

from imageheader.errors import Corrupt, HeaderError, Truncated, UnsupportedPixels
from imageheader.header import Buffer, Header

T = TypeVar("T")

MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

_PHOTOMETRIC = {
    tifffile.PHOTOMETRIC.MINISWHITE,
    tifffile.PHOTOMETRIC.MINISBLACK,
    tifffile.PHOTOMETRIC.RGB,
    tifffile.PHOTOMETRIC.YCBCR,
}


def open_tiff(data: Buffer) -> tifffile.TiffFile:
    """Open ``data`` with tifffile without copying it (an mmap is read in place, from its start:
    tifffile takes a stream's position as the file's start, so the mmap is rewound first).

    Raises:
        Corrupt: tifffile cannot read the file's header.
    """
    if isinstance(data, bytes | bytearray):
        stream: IO[bytes] | mmap.mmap = io.BytesIO(data)
    else:
        data.seek(0)
        stream = data
    try:
        return tifffile.TiffFile(cast(IO[bytes], stream))
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise Corrupt(f"corrupt TIFF: {exc}") from exc


def first_page(tif: tifffile.TiffFile) -> tifffile.TiffPage:
    """The first page of an open file.

    Raises:
        Corrupt: it cannot be read, or is not an image.
    """
    page = _read(lambda: tif.pages.first)
    if not isinstance(page, tifffile.TiffPage):
        raise Corrupt("corrupt TIFF: the first page is not a readable image")
    return page


def header(data: Buffer) -> Header:
    """Describe the first page, and how many planes and channel planes the first series holds
    (pages that are themselves volumes are refused).

    Raises:
        Corrupt: tifffile cannot read the header or the first page.
        UnsupportedPixels: a volume page, photometric other than grey/RGB/YCbCr, not 1, 3 or 4
            samples, or a sample type other than uint8, uint16 or float.
    """
    with open_tiff(data) as tif:
        return header_of(tif)


def header_of(tif: tifffile.TiffFile) -> Header:
    """:func:`header` of a file already open (:func:`open_tiff`)."""
    page = first_page(tif)
    planes, channel_planes = _stack(tif)
    separate, depth, height, width, contig = _read(lambda: page.shaped)
    if depth > 1:
        raise UnsupportedPixels(
            f"TIFF page is a 3D volume with {depth} z-planes; send a single 2D plane"
        )
    photometric = _read(lambda: page.photometric)
    if photometric not in _PHOTOMETRIC:
        raise UnsupportedPixels(
            f"TIFF photometric {enum_name(photometric)} is not supported; "
            "supported: grey, RGB, YCbCr"
        )
    channels = separate * contig
    if channels not in (1, 3, 4):
        raise UnsupportedPixels(
            f"TIFF with {channels} samples per pixel is not supported; "
            "supported: 1 (grey), 3 (RGB), 4 (RGBA)"
        )
    dtype, bits, sample = _read(lambda: (page.dtype, page.bitspersample, page.sampleformat))
    if dtype is None:
        raise UnsupportedPixels(
            f"TIFF pixel type ({bits}-bit, sample format {enum_name(sample)}) is not supported"
        )
    if dtype.kind == "f":
        out_dtype = "float32"
    elif dtype in (np.uint8, np.uint16):
        out_dtype = dtype.name
    else:
        raise UnsupportedPixels(
            f"TIFF pixel type {dtype.name} is not supported; supported: uint8, uint16, float"
        )
    return Header(
        "tiff", int(width), int(height), channels, out_dtype, int(bits), planes, channel_planes
    )


def check_complete(data: Buffer) -> None:
    """Every strip/tile of the first page must lie inside the file.

    The strip/tile tables are read only here, so a caller can refuse an oversized image (whose
    tables may be huge) from :func:`header` first.

    Raises:
        Corrupt: the page cannot be read or has no pixel data.
        Truncated: pixel data runs past the end of the file.
    """
    with open_tiff(data) as tif:
        check_complete_of(tif, len(data))


def check_complete_of(tif: tifffile.TiffFile, size: int) -> None:
    """:func:`check_complete` of a file of ``size`` bytes already open (:func:`open_tiff`)."""
    page = first_page(tif)
    offsets = _read(lambda: list(page.dataoffsets))
    counts = _read(lambda: list(page.databytecounts))
    if not offsets or not any(counts):
        raise Corrupt("corrupt TIFF: the first page has no pixel data")
    if any(off + n > size for off, n in zip(offsets, counts, strict=False)):
        raise Truncated("truncated TIFF: pixel data runs past the end of the file")


def _read(read: Callable[[], T]) -> T:
    try:
        return read()
    except HeaderError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise Corrupt(f"corrupt TIFF: cannot read the first page: {exc}") from exc


def enum_name(value: object) -> str:
    """Name of a tifffile enum member (or the raw value when it is not one)."""
    return str(getattr(value, "name", value))


def _extra_axes(tif: tifffile.TiffFile) -> list[tuple[str, int]]:
    """The axes of the first series beyond a page's own (``Y``, ``X``, samples ``S``), with
    their sizes, in file order: one page per index. Empty when the series is one page, or
    when its description does not add up to its pages (then only the first page is read)."""
    try:
        series = tif.series[0]
        extra = [(a, int(n)) for a, n in zip(series.axes, series.shape, strict=True)]
        extra = [(a, n) for a, n in extra if a not in "YXS" and n > 1]
        pages = int(np.prod([n for _, n in extra])) if extra else 1
        if pages != len(series):
            return []
    except Exception:  # unreadable metadata: treat the file as its first page
        return []
    return extra


def _stack(tif: tifffile.TiffFile) -> tuple[int, int]:
    """(planes, channel planes) of the first series (see :class:`~imageheader.header.Header`)."""
    extra = _extra_axes(tif)
    channels = int(np.prod([n for a, n in extra if a == "C"])) if extra else 1
    planes = int(np.prod([n for a, n in extra if a != "C"])) if extra else 1
    return planes, channels


def page_index(tif: tifffile.TiffFile, plane: int, channel: int) -> int:
    """Index in the first series of the page holding ``plane`` and ``channel`` (both checked
    against :func:`header_of` by :func:`imageheader.stack.choose`)."""
    extra = _extra_axes(tif)
    if not extra:
        return 0
    plane_dims = [n for a, n in extra if a != "C"]
    plane_index = iter(np.unravel_index(plane, plane_dims) if plane_dims else ())
    index = [channel if a == "C" else int(next(plane_index)) for a, _ in extra]
    return int(np.ravel_multi_index(index, [n for _, n in extra]))
