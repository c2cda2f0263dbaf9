"""The shared header parser: formats, sizes, pixel types and every way a header can be bad."""

from __future__ import annotations

import io
import mmap
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import imageheader
from imageheader import (
    Corrupt,
    Degenerate,
    Empty,
    Header,
    Truncated,
    UnknownFormat,
    UnsupportedPixels,
    check_complete,
    detect_format,
    read_header,
)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pillow(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(height: int, width: int, channels: int) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _png(height: int = 24, width: int = 32, channels: int = 3) -> bytes:
    return _pillow(_noise(height, width, channels), "PNG")


def _jpeg(height: int = 24, width: int = 32, channels: int = 3) -> bytes:
    return _pillow(_noise(height, width, channels), "JPEG")


def _tiff(array: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(ctype))
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def _png_claiming(width: int, height: int, colour: int = 0, depth: int = 8) -> bytes:
    """A complete, tiny PNG whose IHDR claims ``width x height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return _PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_jpeg(8, 8, 1))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_claiming(width: int, height: int) -> bytes:
    """A tiny TIFF whose first page's tags claim ``width x height``."""
    buf = io.BytesIO(_tiff(np.zeros((4, 4), np.uint8)))
    with tifffile.TiffFile(buf) as tif:
        tags = tif.pages.first.tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(height)
    return buf.getvalue()


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_png(24, 32, 3), Header("png", 32, 24, 3, "uint8", 8)),
        (_png(5, 7, 4), Header("png", 7, 5, 4, "uint8", 8)),
        (_pillow(np.zeros((6, 9), np.uint16), "PNG"), Header("png", 9, 6, 1, "uint16", 16)),
        (_jpeg(24, 32, 3), Header("jpeg", 32, 24, 3, "uint8", 8)),
        (_jpeg(8, 8, 1), Header("jpeg", 8, 8, 1, "uint8", 8)),
        (_tiff(np.zeros((6, 5, 3), np.uint16)), Header("tiff", 5, 6, 3, "uint16", 16)),
        (_tiff(np.zeros((6, 5), np.float64)), Header("tiff", 5, 6, 1, "float32", 64)),
    ],
    ids=["png-rgb", "png-rgba", "png-grey16", "jpeg-rgb", "jpeg-grey", "tiff-rgb16", "tiff-f64"],
)
def test_reads_headers_of_complete_files(data: bytes, expected: Header) -> None:
    assert read_header(data) == expected
    check_complete(data, expected.format)


def test_palette_png_with_transparency_has_alpha() -> None:
    data = _pillow(np.zeros((6, 6, 3), np.uint8), "PNG")
    palette = Image.open(io.BytesIO(data)).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG", transparency=0)
    assert read_header(buf.getvalue()).channels == 4
    palette.save(buf := io.BytesIO(), format="PNG")
    assert read_header(buf.getvalue()).channels == 3


@pytest.mark.parametrize("make", [_png, _jpeg, lambda: _tiff(np.ones((64, 64), np.uint8))])
def test_reads_an_mmap_in_place(tmp_path: Path, make: object) -> None:
    data: bytes = make()  # type: ignore[operator]
    path = tmp_path / "image"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        header = read_header(mapped)
        check_complete(mapped, header.format)
        check_complete(mapped, header.format)  # twice: the mmap's position does not matter
    assert header == read_header(data)


# --- format ------------------------------------------------------------------------------------


def test_empty() -> None:
    with pytest.raises(Empty, match="empty"):
        read_header(b"")


@pytest.mark.parametrize(
    "data", [b"GIF89a" + b"\x00" * 40, b"BM" + b"\x00" * 60, b"%PDF-1.7\n", b"hello\n"]
)
def test_unknown_magic_names_the_supported_formats(data: bytes) -> None:
    with pytest.raises(UnknownFormat) as info:
        detect_format(data)
    assert "PNG, JPEG, TIFF" in info.value.message


@pytest.mark.parametrize("head", [_PNG_MAGIC[:5], b"\xff\xd8", b"II*"])
def test_file_ending_inside_its_signature_is_truncated(head: bytes) -> None:
    with pytest.raises(Truncated, match="signature"):
        detect_format(head)


def test_errors_share_one_base_with_a_message() -> None:
    for cls in (Empty, UnknownFormat, Truncated, Corrupt, Degenerate, UnsupportedPixels):
        assert issubclass(cls, imageheader.HeaderError)
    with pytest.raises(imageheader.HeaderError) as info:
        read_header(b"nope")
    assert info.value.message == str(info.value)


# --- truncated and corrupt ---------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 12, 20, 200])
def test_truncated_png_reads_its_header_but_is_not_complete(cut: int) -> None:
    data = _png(40, 40, 3)[:-cut]
    assert read_header(data).width == 40
    with pytest.raises(Truncated, match="truncated PNG"):
        check_complete(data, "png")


def test_png_cut_inside_ihdr() -> None:
    with pytest.raises(Truncated, match="IHDR"):
        read_header(_png()[:20])


def test_png_first_chunk_not_ihdr() -> None:
    data = _png()
    with pytest.raises(Corrupt, match="IHDR"):
        read_header(data[:12] + b"IHDX" + data[16:])


def test_png_without_idat() -> None:
    data = _png_claiming(4, 4)
    idat, iend = data.index(b"IDAT") - 4, data.index(b"IEND") - 4
    with pytest.raises(Corrupt, match="IDAT"):
        check_complete(data[:idat] + data[iend:], "png")


def test_png_crc_is_checked_only_when_asked() -> None:
    data = bytearray(_png_claiming(4, 4))
    data[data.index(b"IDAT") + 5] ^= 0xFF
    check_complete(bytes(data), "png", check_crc=False)
    with pytest.raises(Corrupt, match="CRC"):
        check_complete(bytes(data), "png", check_crc=True)


@pytest.mark.parametrize("cut", [2, 10, 300])
def test_truncated_jpeg(cut: int) -> None:
    data = _jpeg(48, 48, 3)[:-cut]
    assert read_header(data).width == 48
    with pytest.raises(Truncated, match="truncated JPEG"):
        check_complete(data, "jpeg")


def test_jpeg_cut_before_the_first_scan() -> None:
    data = _jpeg()
    with pytest.raises(Truncated, match="truncated JPEG"):
        read_header(data[: data.index(b"\xff\xc0") + 5])


def test_jpeg_trailing_bytes_after_eoi_are_allowed() -> None:
    check_complete(_jpeg() + b"camera trailer", "jpeg")


def test_truncated_tiff() -> None:
    data = _tiff(np.ones((64, 64), np.uint8))[:-1000]  # tifffile: directory first, pixels last
    assert read_header(data).width == 64
    with pytest.raises(Truncated, match="truncated TIFF"):
        check_complete(data, "tiff")


def test_tiff_cut_inside_its_directory() -> None:
    with pytest.raises(Corrupt, match="corrupt TIFF"):
        read_header(_tiff(np.ones((8, 8), np.uint8))[:10])


# --- sizes and pixel types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        _png_claiming(1, 100),
        _png_claiming(100, 1),
        _png_claiming(0, 0),
        _jpeg_claiming(1, 1),
        _tiff(np.zeros((1, 50), np.uint8)),
    ],
    ids=["png-1-wide", "png-1-high", "png-0x0", "jpeg-1x1", "tiff-1-high"],
)
def test_degenerate_sizes(data: bytes) -> None:
    with pytest.raises(Degenerate, match=f"at least {imageheader.MIN_SIDE} pixels"):
        read_header(data)


@pytest.mark.parametrize("make", [_png_claiming, _jpeg_claiming, _tiff_claiming])
def test_huge_header_is_read_without_allocating_its_pixels(make: object) -> None:
    data: bytes = make(60_000, 60_000)  # type: ignore[operator]
    tracemalloc.start()
    try:
        header = read_header(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.pixels == 3_600_000_000
    assert peak < 1_000_000


_CONTIG = {"photometric": "minisblack", "planarconfig": "contig"}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_tiff(np.zeros((6, 5), np.int32)), "int32"),
        (_tiff(np.zeros((6, 5), np.complex64)), "complex"),
        (_tiff(np.zeros((6, 5), bool)), "not supported"),
        (_tiff(np.zeros((6, 5, 2), np.uint8), **_CONTIG), "2 samples"),
        (_tiff(np.zeros((8, 8, 4), np.uint8), photometric="separated"), "SEPARATED"),
    ],
    ids=["int32", "complex", "bool", "2-channels", "cmyk"],
)
def test_unsupported_tiff_pixels(data: bytes, match: str) -> None:
    with pytest.raises(UnsupportedPixels, match=match):
        read_header(data)


def test_12_bit_jpeg() -> None:
    data = bytearray(_jpeg())
    data[data.index(b"\xff\xc0") + 4] = 12
    with pytest.raises(UnsupportedPixels, match="12-bit"):
        read_header(bytes(data))


@pytest.mark.parametrize(("colour", "depth"), [(2, 4), (5, 8)])
def test_png_invalid_colour_type_or_depth(colour: int, depth: int) -> None:
    with pytest.raises(Corrupt, match="colour type"):
        read_header(_png_claiming(8, 8, colour=colour, depth=depth))
