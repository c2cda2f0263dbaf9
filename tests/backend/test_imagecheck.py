"""Header checks of uploads without decoding pixels (pure: files in a temp dir)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.errors import ApiError
from backend.imagecheck import ImageHeader, check_image
from tests.backend import images

LIMIT = 100_000_000


def check(tmp_path: Path, data: bytes, max_pixels: int = LIMIT) -> ImageHeader:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return check_image(path, max_pixels)


def refused(tmp_path: Path, data: bytes, max_pixels: int = LIMIT) -> ApiError:
    with pytest.raises(ApiError) as info:
        check(tmp_path, data, max_pixels)
    return info.value


def _sof_offset(data: bytes) -> int:
    """Offset of the first SOF0/SOF2 marker of a Pillow JPEG."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        pos = data.find(marker)
        if pos > 0:
            return pos
    raise AssertionError("no SOF marker")


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (images.png(24, 32, 3), ImageHeader("png", 32, 24, 3, 8)),
        (images.png(10, 12, 4), ImageHeader("png", 12, 10, 4, 8)),
        (images.png(5, 7, 1), ImageHeader("png", 7, 5, 1, 8)),
        (images.png16(16, 9), ImageHeader("png", 9, 16, 1, 16)),
        (images.jpeg(24, 32, 3), ImageHeader("jpeg", 32, 24, 3, 8)),
        (images.jpeg(8, 8, 1), ImageHeader("jpeg", 8, 8, 1, 8)),
        (images.tiff(), ImageHeader("tiff", 32, 24, 1, 8)),
        (
            images.tiff(np.zeros((6, 5, 3), np.uint16), photometric="rgb"),
            ImageHeader("tiff", 5, 6, 3, 16),
        ),
        (images.tiff(np.zeros((6, 5), np.float32)), ImageHeader("tiff", 5, 6, 1, 32)),
        (
            images.tiff(np.zeros((6, 5), np.uint8), compression="zlib"),
            ImageHeader("tiff", 5, 6, 1, 8),
        ),
        (
            images.tiff(np.zeros((64, 64), np.uint8), tile=(16, 16)),
            ImageHeader("tiff", 64, 64, 1, 8),
        ),
    ],
)
def test_accepts_supported_images(tmp_path: Path, data: bytes, expected: ImageHeader) -> None:
    assert check(tmp_path, data) == expected


def test_palette_png_with_transparency_is_rgba(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(images.noise(6, 6, 3)).convert("P").save(buf, format="PNG", transparency=0)
    assert check(tmp_path, buf.getvalue()).channels == 4


def test_jpeg_with_trailing_padding_or_data_after_eoi_is_accepted(tmp_path: Path) -> None:
    data = images.jpeg()
    assert check(tmp_path, data + b"\x00" * 100).format == "jpeg"
    assert check(tmp_path, data + b"camera trailer").format == "jpeg"


def test_multi_page_tiff_is_read_from_its_first_page(tmp_path: Path) -> None:
    buf = io.BytesIO()
    import tifffile

    with tifffile.TiffWriter(buf) as tw:
        tw.write(np.zeros((6, 5), np.uint8))
        tw.write(np.zeros((9, 9), np.uint8))
    assert check(tmp_path, buf.getvalue()) == ImageHeader("tiff", 5, 6, 1, 8)


# --- refused -----------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    err = refused(tmp_path, b"")
    assert (err.status, err.code) == (422, "empty_file")


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text\n", images.gif(), b"BM" + b"\x00" * 60, b"%PDF-1.7\n" + b"x" * 50],
    ids=["text", "gif", "bmp", "pdf"],
)
def test_unsupported_formats(tmp_path: Path, data: bytes) -> None:
    err = refused(tmp_path, data)
    assert (err.status, err.code) == (415, "unsupported_format")
    assert "PNG, JPEG, TIFF" in err.message


@pytest.mark.parametrize("cut", [1, 12, 20, 200])
def test_truncated_png(tmp_path: Path, cut: int) -> None:
    data = images.png(40, 40, 3)
    err = refused(tmp_path, data[:-cut])
    assert (err.status, err.code) == (422, "invalid_image")
    assert "truncated PNG" in err.message


def test_png_cut_inside_its_header_or_signature(tmp_path: Path) -> None:
    data = images.png()
    for cut in (4, 20):
        err = refused(tmp_path, data[:cut])
        assert (err.status, err.code) == (422, "invalid_image")


def test_png_without_pixel_data(tmp_path: Path) -> None:
    data = images.png_claiming(4, 4)
    idat = data.index(b"IDAT") - 4
    iend = data.index(b"IEND") - 4
    err = refused(tmp_path, data[:idat] + data[iend:])
    assert (err.status, err.code) == (422, "invalid_image")


@pytest.mark.parametrize("cut", [2, 10, 300])
def test_truncated_jpeg(tmp_path: Path, cut: int) -> None:
    data = images.jpeg(48, 48, 3)
    err = refused(tmp_path, data[:-cut])
    assert (err.status, err.code) == (422, "invalid_image")
    assert "truncated JPEG" in err.message


def test_jpeg_cut_before_the_image_data(tmp_path: Path) -> None:
    data = images.jpeg()
    err = refused(tmp_path, data[: _sof_offset(data) + 5])
    assert (err.status, err.code) == (422, "invalid_image")


def test_truncated_tiff(tmp_path: Path) -> None:
    data = images.tiff(np.ones((64, 64), np.uint8))  # tifffile: directory first, pixels last
    err = refused(tmp_path, data[:-1000])
    assert (err.status, err.code) == (422, "invalid_image")
    assert "truncated TIFF" in err.message


def test_tiff_cut_inside_its_directory(tmp_path: Path) -> None:
    err = refused(tmp_path, images.tiff()[:10])
    assert (err.status, err.code) == (422, "invalid_image")


def test_png_claiming_too_many_pixels(tmp_path: Path) -> None:
    err = refused(tmp_path, images.png_claiming(100_000, 100_000), max_pixels=LIMIT)
    assert (err.status, err.code) == (413, "image_too_large")
    assert str(LIMIT) in err.message


def test_pixel_limit_is_inclusive(tmp_path: Path) -> None:
    data = images.png(10, 10, 1)
    assert check(tmp_path, data, max_pixels=100).pixels == 100
    assert refused(tmp_path, data, max_pixels=99).code == "image_too_large"


def test_jpeg_claiming_too_many_pixels(tmp_path: Path) -> None:
    data = bytearray(images.jpeg())
    sof = _sof_offset(bytes(data))
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    err = refused(tmp_path, bytes(data))
    assert (err.status, err.code) == (413, "image_too_large")


@pytest.mark.parametrize(
    "data",
    [
        images.png_claiming(1, 100),
        images.png_claiming(100, 1),
        images.png_claiming(0, 0),
        images.tiff(np.zeros((1, 50), np.uint8)),
    ],
    ids=["png-1-wide", "png-1-high", "png-0x0", "tiff-1-high"],
)
def test_degenerate_sizes(tmp_path: Path, data: bytes) -> None:
    err = refused(tmp_path, data)
    assert (err.status, err.code) == (422, "invalid_image")
    assert "degenerate" in err.message


@pytest.mark.parametrize(
    "data",
    [
        images.tiff(np.zeros((6, 5), np.int32)),
        images.tiff(np.zeros((6, 5), np.complex64)),
        images.tiff(np.zeros((6, 5), np.uint32)),
        images.tiff(np.zeros((6, 5, 5), np.uint8), photometric="minisblack", planarconfig="contig"),
        images.tiff(np.zeros((6, 5, 2), np.uint8), photometric="minisblack", planarconfig="contig"),
        images.png_claiming(8, 8, colour=2, depth=4),  # RGB at 4 bits: not a PNG type
        images.png_claiming(8, 8, colour=5, depth=8),  # no such colour type
    ],
    ids=["int32", "complex", "uint32", "5-channels", "2-channels", "rgb4", "colour5"],
)
def test_unsupported_pixel_types(tmp_path: Path, data: bytes) -> None:
    err = refused(tmp_path, data)
    assert (err.status, err.code) == (422, "invalid_image")


def test_12_bit_jpeg(tmp_path: Path) -> None:
    data = bytearray(images.jpeg())
    data[_sof_offset(bytes(data)) + 4] = 12
    err = refused(tmp_path, bytes(data))
    assert (err.status, err.code) == (422, "invalid_image")
    assert "12-bit" in err.message


def test_png_whose_first_chunk_is_not_ihdr(tmp_path: Path) -> None:
    data = images.png()
    err = refused(tmp_path, data[:12] + b"IHDX" + data[16:])
    assert (err.status, err.code) == (422, "invalid_image")


# --- agreement with the engine -----------------------------------------------------------------

AGREEMENT_CASES = {
    "png-rgb": images.png(24, 32, 3),
    "png-grey16": images.png16(),
    "png-rgba": images.png(6, 7, 4),
    "jpeg-rgb": images.jpeg(),
    "jpeg-grey": images.jpeg(8, 8, 1),
    "tiff-grey": images.tiff(),
    "tiff-rgb16": images.tiff(np.zeros((6, 5, 3), np.uint16), photometric="rgb"),
    "tiff-float": images.tiff(np.zeros((6, 5), np.float32)),
    "png-truncated": images.png(40, 40, 3)[:-30],
    "jpeg-truncated": images.jpeg(48, 48, 3)[:-10],
    "tiff-truncated": images.tiff(np.ones((64, 64), np.uint8))[:-1000],
    "tiff-int32": images.tiff(np.zeros((6, 5), np.int32)),
    "png-degenerate": images.png_claiming(1, 100),
    "gif": images.gif(),
}


@pytest.mark.parametrize("name", sorted(AGREEMENT_CASES))
def test_gateway_and_engine_agree(tmp_path: Path, name: str) -> None:
    """What the gateway accepts, the engine decodes, with the same size and channels (the
    gateway cannot import the engine; this test can)."""
    from ml_service.errors import EngineError
    from ml_service.imaging.imageio import decode_image

    data = AGREEMENT_CASES[name]
    try:
        header: ImageHeader | None = check(tmp_path, data)
    except ApiError:
        header = None
    try:
        decoded: np.ndarray | None = decode_image(data, LIMIT)
    except EngineError:
        decoded = None
    assert (header is None) == (decoded is None), (header, None if decoded is None else "ok")
    if header is not None and decoded is not None:
        assert decoded.shape[:2] == (header.height, header.width)
        assert (decoded.shape[2] if decoded.ndim == 3 else 1) == header.channels
