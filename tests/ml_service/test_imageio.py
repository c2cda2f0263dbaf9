"""Decoding uploads: every supported pixel layout, and every way an upload can be bad."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from ml_service.errors import ImageTooLarge, InvalidImage, StackNeedsChoice, UnsupportedFormat
from ml_service.imaging import imageio
from ml_service.imaging.imageio import SUPPORTED_FORMATS, ImageInfo, decode_image, read_image_info

MAX = 10_000_000


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB(A)/grey array (OpenCV writes BGR, so convert first)."""
    if array.ndim == 3:
        code = cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        array = cv2.cvtColor(array, code)
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def _jpeg(array: np.ndarray, **params: int) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    flags = [cv2.IMWRITE_JPEG_QUALITY, 95]
    for key, value in params.items():
        flags += [getattr(cv2, key), value]
    ok, encoded = cv2.imencode(".jpg", array, flags)
    assert ok
    return encoded.tobytes()


def _tiff(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def _pillow_png(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _smooth(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth random image (JPEG-friendly) spanning most of the dtype's range."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (noise * np.iinfo(dtype).max).astype(dtype)


def _rng_image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


# --- valid images ------------------------------------------------------------------------------


def test_png_8bit_rgba_decodes_exactly_in_rgba_order() -> None:
    image = _rng_image((23, 31, 4), np.uint8)
    decoded = decode_image(_png(image), MAX)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)


def test_png_8bit_rgb_is_in_rgb_order() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0] = 200  # red
    decoded = decode_image(_png(image), MAX)
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3), (40, 50, 4)])
def test_png_16bit_decodes_exactly(shape: tuple[int, ...]) -> None:
    image = _rng_image(shape, np.uint16)
    decoded = decode_image(_png(image), MAX)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, image)


def test_png_palette_becomes_rgb_and_grey_alpha_rgba() -> None:
    grey = _rng_image((20, 30), np.uint8)
    palette = decode_image(_pillow_png(Image.fromarray(grey).convert("P")), MAX)
    assert palette.shape == (20, 30, 3)
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(grey)])
    decoded = decode_image(_pillow_png(la), MAX)
    assert decoded.shape == (20, 30, 4)
    np.testing.assert_array_equal(decoded[..., 0], grey)


def test_jpeg_grey_decodes_as_2d_uint8() -> None:
    image = _smooth((64, 80))
    decoded = decode_image(_jpeg(image), MAX)
    assert decoded.shape == (64, 80) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image).mean() < 2


def test_jpeg_colour_is_rgb_order() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 220
    decoded = decode_image(_jpeg(image), MAX)
    assert decoded.shape == (32, 32, 3)
    assert decoded[..., 0].mean() > 200 and decoded[..., 1:].mean() < 20


def test_progressive_jpeg_decodes() -> None:
    image = _smooth((48, 64, 3))
    decoded = decode_image(_jpeg(image, IMWRITE_JPEG_PROGRESSIVE=1), MAX)
    assert decoded.shape == (48, 64, 3)


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3)])
def test_tiff_16bit_grey_and_rgb_decode_exactly(shape: tuple[int, ...]) -> None:
    image = _rng_image(shape, np.uint16)
    photometric = "rgb" if len(shape) == 3 else "minisblack"
    decoded = decode_image(_tiff(image, photometric=photometric), MAX)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, image)


def test_a_tiff_is_parsed_once_per_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []

    class Counting(tifffile.TiffFile):
        def __init__(self, *args: object, **kwargs: object) -> None:
            opened.append(args[0])
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tifffile, "TiffFile", Counting)
    image = _rng_image((40, 50), np.uint16)
    np.testing.assert_array_equal(decode_image(_tiff(image), MAX), image)
    assert len(opened) == 1  # header, completeness and pixels from one parse


def test_tiff_planar_rgb_and_rgba() -> None:
    image = _rng_image((3, 20, 30), np.uint8)
    data = _tiff(image, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(decode_image(data, MAX), np.moveaxis(image, 0, -1))
    rgba = _rng_image((20, 30, 4), np.uint8)
    data = _tiff(rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(decode_image(data, MAX), rgba)


def test_tiff_zlib_compressed() -> None:
    image = _rng_image((40, 50), np.uint16)
    np.testing.assert_array_equal(decode_image(_tiff(image, compression="zlib"), MAX), image)


def test_tiff_lzw_compressed() -> None:
    pytest.importorskip("imagecodecs")
    image = _rng_image((40, 50), np.uint16)
    np.testing.assert_array_equal(decode_image(_tiff(image, compression="lzw"), MAX), image)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiff_float_decodes_as_float32(dtype: type) -> None:
    image: np.ndarray = np.random.default_rng(0).random((20, 30)).astype(dtype)
    decoded = decode_image(_tiff(image), MAX)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, image, rtol=1e-6)


def test_multipage_tiff_gives_the_chosen_page() -> None:
    pages = _rng_image((3, 20, 30), np.uint8)
    data = _tiff(pages, photometric="minisblack")  # one series of three pages: a stack
    np.testing.assert_array_equal(decode_image(data, MAX, plane=0), pages[0])
    np.testing.assert_array_equal(decode_image(data, MAX, plane=2), pages[2])
    with pytest.raises(StackNeedsChoice, match="3 planes"):
        decode_image(data, MAX)


def test_read_image_info_matches_decoded_array() -> None:
    cases = [
        (_png(_rng_image((20, 30, 4), np.uint8)), ImageInfo("png", 30, 20, 4, "uint8")),
        (_png(_rng_image((20, 30), np.uint16)), ImageInfo("png", 30, 20, 1, "uint16")),
        (_jpeg(_smooth((20, 30, 3))), ImageInfo("jpeg", 30, 20, 3, "uint8")),
        (_tiff(_rng_image((20, 30, 3), np.uint16)), ImageInfo("tiff", 30, 20, 3, "uint16")),
    ]
    for data, expected in cases:
        info = read_image_info(data)
        assert info == expected
        decoded = decode_image(data, MAX)
        assert decoded.shape == info.shape and decoded.dtype == np.dtype(info.dtype)


def test_exactly_max_pixels_is_accepted() -> None:
    decode_image(_png(np.zeros((10, 20), np.uint8)), max_pixels=200)


# --- bad uploads -------------------------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImage, match="empty") as info:
        decode_image(b"", MAX)
    assert info.value.code == "invalid_image"


def test_random_bytes_are_unsupported_and_message_lists_formats() -> None:
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(b"GIF89a" + data, MAX)
    assert info.value.code == "unsupported_format"
    for name in SUPPORTED_FORMATS:
        assert name.upper() in info.value.message


def test_truncated_png() -> None:
    data = _png(_rng_image((64, 64), np.uint8))
    with pytest.raises(InvalidImage, match="truncated PNG"):
        decode_image(data[: len(data) // 2], MAX)


def test_png_without_iend_is_truncated() -> None:
    data = _png(_rng_image((16, 16), np.uint8))
    with pytest.raises(InvalidImage, match="truncated PNG"):
        decode_image(data[:-12], MAX)


def test_corrupt_png_crc() -> None:
    data = bytearray(_png(_rng_image((64, 64), np.uint8)))
    data[len(data) // 2] ^= 0xFF  # inside IDAT
    with pytest.raises(InvalidImage, match="CRC"):
        decode_image(bytes(data), MAX)


@pytest.mark.parametrize("progressive", [0, 1])
def test_truncated_jpeg(progressive: int) -> None:
    data = _jpeg(_smooth((128, 128, 3)), IMWRITE_JPEG_PROGRESSIVE=progressive)
    with pytest.raises(InvalidImage, match="truncated JPEG"):
        decode_image(data[: len(data) // 2], MAX)


def test_jpeg_missing_only_eoi_is_truncated() -> None:
    data = _jpeg(_smooth((64, 64)))
    with pytest.raises(InvalidImage, match="truncated JPEG"):
        decode_image(data[:-2], MAX)


def test_jpeg_cut_in_header() -> None:
    data = _jpeg(_smooth((64, 64)))
    with pytest.raises(InvalidImage):
        decode_image(data[:100], MAX)


def test_truncated_tiff() -> None:
    data = _tiff(_rng_image((64, 64), np.uint16))
    with pytest.raises(InvalidImage, match="truncated TIFF"):
        decode_image(data[: len(data) // 2], MAX)


def test_tiff_cut_before_first_ifd() -> None:
    data = _tiff(_rng_image((64, 64), np.uint16))
    with pytest.raises(InvalidImage, match="corrupt TIFF"):
        decode_image(data[:6], MAX)


def test_truncated_compressed_tiff() -> None:
    data = _tiff(_rng_image((64, 64), np.uint16), compression="zlib")
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], MAX)


def _png_with_size(width: int, height: int) -> bytes:
    data = bytearray(_png(np.zeros((4, 4), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(_jpeg(np.zeros((8, 8), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_with_size(width: int, height: int) -> bytes:
    data = bytearray(_tiff(np.zeros((4, 4), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            fmt = "<H" if tag.dtype == 3 else "<I"
            data[tag.valueoffset : tag.valueoffset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


@pytest.mark.parametrize("make", [_png_with_size, _jpeg_with_size, _tiff_with_size])
def test_too_many_pixels_refused_from_header_without_decoding(
    make: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make(60_000, 60_000)  # type: ignore[operator]
    assert read_image_info(data).pixels == 3_600_000_000

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("pixels were decoded")

    monkeypatch.setattr(imageio.cv2, "imdecode", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match="3600000000 pixels") as info:
            decode_image(data, max_pixels=MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "image_too_large"
    assert peak < 1_000_000


@pytest.mark.parametrize(
    "data",
    [
        _png(np.zeros((1, 50), np.uint8)),
        _png(np.zeros((50, 1), np.uint8)),
        _png_with_size(0, 0),
        _jpeg(np.zeros((1, 1), np.uint8)),
        _tiff(np.zeros((1, 1), np.uint16)),
    ],
)
def test_degenerate_sizes(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="degenerate"):
        decode_image(data, MAX)


_CONTIG = {"photometric": "minisblack", "planarconfig": "contig"}
_VOLUME = {"photometric": "minisblack", "volumetric": True, "tile": (16, 16)}


@pytest.mark.parametrize(
    ("array", "kwargs", "match"),
    [
        (np.zeros((8, 8), np.int32), {}, "int32"),
        (np.zeros((8, 8), np.int16), {}, "int16"),
        (np.zeros((8, 8), np.complex64), {}, "complex"),
        (np.zeros((8, 8), bool), {}, "not supported"),
        (np.zeros((8, 8, 6), np.uint8), _CONTIG, "6 samples"),
        (np.zeros((8, 8, 2), np.uint8), _CONTIG, "2 samples"),
        (np.zeros((4, 8, 8), np.uint8), _VOLUME, "3D volume"),
        (np.zeros((8, 8, 4), np.uint8), {"photometric": "separated"}, "SEPARATED"),
    ],
)
def test_unsupported_tiff_pixel_types(array: np.ndarray, kwargs: dict, match: str) -> None:
    """A pixel type the engine does not read is ``invalid_image``, as at the gateway."""
    data = _tiff(array, **kwargs)
    with pytest.raises(InvalidImage, match=match) as info:
        read_image_info(data)
    assert info.value.code == "invalid_image"
    with pytest.raises(InvalidImage, match=match):
        decode_image(data, MAX)


def test_non_finite_float_tiff() -> None:
    image = np.zeros((8, 8), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(InvalidImage, match="NaN"):
        decode_image(_tiff(image), MAX)


def test_12bit_jpeg_header_is_unsupported() -> None:
    data = bytearray(_jpeg(np.zeros((8, 8), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12
    with pytest.raises(InvalidImage, match="12-bit") as info:
        read_image_info(bytes(data))
    assert info.value.code == "invalid_image"


def _stack(array: np.ndarray, axes: str) -> bytes:
    return _tiff(array, imagej=True, metadata={"axes": axes})


def test_a_z_stack_is_read_at_the_chosen_plane_or_refused_saying_what_it_holds() -> None:
    stack = np.stack([np.full((8, 10), 100 * z, np.uint16) for z in range(5)])
    data = _stack(stack, "ZYX")
    with pytest.raises(StackNeedsChoice, match="holds 5 planes of 10×8; choose one with plane="):
        decode_image(data, MAX)
    for z in (0, 3, 4):
        assert np.array_equal(decode_image(data, MAX, plane=z), stack[z])
    with pytest.raises(StackNeedsChoice, match="plane=5 is not one of them"):
        decode_image(data, MAX, plane=5)


def test_a_channel_first_tiff_is_read_at_the_chosen_channel() -> None:
    channels = np.stack([np.full((8, 10), 7 * (c + 1), np.uint8) for c in range(3)])
    data = _stack(channels, "CYX")
    with pytest.raises(StackNeedsChoice, match="choose one with channel=0..2"):
        decode_image(data, MAX)
    assert np.array_equal(decode_image(data, MAX, channel=2), channels[2])


def test_one_colour_of_an_rgb_image_is_read_as_grey() -> None:
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 1] = 200
    assert np.array_equal(decode_image(_png(rgb), MAX, channel=1), rgb[..., 1])
    assert decode_image(_tiff(rgb), MAX, channel=0).shape == (8, 10)
    assert decode_image(_tiff(rgb), MAX).shape == (8, 10, 3)
