"""Decoding uploaded image bytes into arrays, safely.

Supported containers are PNG, JPEG and TIFF (see :data:`SUPPORTED_FORMATS`). Everything that
can be learned from the header is checked before a single pixel is decoded, so a decompression
bomb (a tiny file that claims billions of pixels) is refused without allocating its pixels. The
header rules live in the shared :mod:`imageheader` package (the gateway checks uploads with the
same code); this module maps its errors to the engine's and decodes:

1. the magic bytes name the format, else :class:`~ml_service.errors.UnsupportedFormat`;
2. :func:`read_image_info` parses the header (PNG ``IHDR``, JPEG ``SOFn``, the first TIFF IFD)
   and refuses degenerate sizes and pixel types the engine does not read
   (:class:`~ml_service.errors.InvalidImage`, the gateway's ``invalid_image`` too);
3. :func:`decode_image` checks ``width * height`` against ``max_pixels``
   (:class:`~ml_service.errors.ImageTooLarge`), then checks that the file is complete (every PNG
   chunk present with a valid CRC up to ``IEND``; a JPEG ``EOI`` marker after the first scan;
   every TIFF strip/tile inside the file) because decoders may silently return a partially
   decoded image, and only then decodes.

Decoded arrays are ``(H, W)`` grey or ``(H, W, C)`` with ``C = 3`` (RGB order) or ``C = 4``
(RGBA), of dtype uint8 or uint16; floating-point TIFFs come back as float32 (finite values only).
PNG and JPEG are decoded by OpenCV (which reads 16-bit RGB PNGs, unlike Pillow), TIFF by
tifffile. Notes on what is accepted:

- PNG: palette and grey+alpha images are expanded to RGB/RGBA (3 or 4 channels); a ``tRNS``
  chunk makes RGB and palette images RGBA; 1/2/4-bit grey is expanded to 8 bits.
- JPEG: 8-bit baseline/progressive, grey or colour (CMYK is converted to RGB by OpenCV);
  EXIF orientation is ignored (pixels are returned as stored).
- TIFF: one page of the first series. A stack (ImageJ/OME z-stacks and hyperstacks, a plain
  multi-page series) is read at the ``plane`` and ``channel`` the caller names; without a
  choice it is refused with a message saying what it holds (:mod:`imageheader.stack`). Pages
  that are themselves volumes are refused. Photometric grey (min-is-black or min-is-white,
  values returned as stored), RGB and YCbCr; 1, 3 or 4 samples; uint8, uint16 or float
  (returned as float32). Compressions beyond deflate/LZMA need the ``imagecodecs`` package;
  without it they are refused as unsupported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

import imageheader
from imageheader import MIN_SIDE, SUPPORTED_FORMATS
from imageheader.tiff import (
    check_complete_of,
    enum_name,
    first_page,
    header_of,
    open_tiff,
    page_index,
)
from ml_service.errors import ImageTooLarge, InvalidImage, StackNeedsChoice, UnsupportedFormat

__all__ = [
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "ImageInfo",
    "decode_image",
    "detect_format",
    "read_image_info",
]


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an image, in terms of the array :func:`decode_image` returns.

    Attributes:
        format: ``"png"``, ``"jpeg"`` or ``"tiff"``.
        width: pixels per row.
        height: rows.
        channels: 1 (grey), 3 (RGB) or 4 (RGBA).
        dtype: ``"uint8"``, ``"uint16"`` or ``"float32"``.
    """

    format: str
    width: int
    height: int
    channels: int
    dtype: str

    @property
    def pixels(self) -> int:
        """``width * height``."""
        return self.width * self.height

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the decoded array: ``(H, W)`` or ``(H, W, C)``."""
        if self.channels == 1:
            return (self.height, self.width)
        return (self.height, self.width, self.channels)


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Raise :mod:`imageheader` errors as the engine's."""
    try:
        yield
    except imageheader.UnknownFormat as exc:
        raise UnsupportedFormat(exc.message) from exc
    except imageheader.StackChoice as exc:
        raise StackNeedsChoice(exc.message) from exc
    except imageheader.HeaderError as exc:
        raise InvalidImage(exc.message) from exc


def detect_format(data: bytes) -> str:
    """Name the container format from the magic bytes.

    Raises:
        InvalidImage: ``data`` is empty, or ends inside a signature.
        UnsupportedFormat: the magic bytes are not those of a supported format.
    """
    with _engine_errors():
        return imageheader.detect_format(data)


def read_image_info(data: bytes) -> ImageInfo:
    """Describe an image from its header alone, without decoding pixels.

    Raises:
        InvalidImage: empty, truncated or corrupt header, a degenerate size (width or height
            below :data:`MIN_SIDE`), or a pixel type the engine does not read.
        UnsupportedFormat: unknown format.
    """
    with _engine_errors():
        return _info(imageheader.read_header(data))


def decode_image(
    data: bytes, max_pixels: int, plane: int | None = None, channel: int | None = None
) -> np.ndarray:
    """Decode PNG, JPEG or TIFF bytes into an array, refusing oversized or damaged files.

    Args:
        data: the uploaded file's bytes.
        max_pixels: largest accepted ``width * height``; checked from the header before any
            pixel is decoded.
        plane: the plane of a TIFF stack to read (required when it has several).
        channel: the channel to read: of a TIFF's channel planes (required when it has
            several), or one colour of an RGB(A) image, returned as a grey ``(H, W)`` array.

    Returns:
        ``(H, W)`` grey or ``(H, W, C)`` array (``C = 3`` RGB or ``C = 4`` RGBA) of dtype
        uint8 or uint16, or float32 for floating-point TIFFs. Its shape and dtype are those of
        :func:`read_image_info`.

    Raises:
        InvalidImage: empty, truncated, corrupt or degenerate image, or a pixel type the
            engine does not read.
        UnsupportedFormat: unknown format, or a TIFF compression that cannot be decoded here.
        ImageTooLarge: more than ``max_pixels`` pixels.
        StackNeedsChoice: a stack without a ``plane``/``channel`` choice, or one it does not
            hold.
    """
    if detect_format(data) == "tiff":
        return _decode_tiff(data, max_pixels, plane, channel)
    with _engine_errors():
        header = imageheader.read_header(data)
        choice = imageheader.choose(header, plane, channel)
    info = _info(header)
    _refuse_oversized(info, max_pixels)
    with _engine_errors():
        imageheader.check_complete(data, info.format, check_crc=True)
    return _pick(_as_described(_decode_opencv(data, info), info), choice)


def _pick(image: np.ndarray, choice: imageheader.Choice) -> np.ndarray:
    """One colour of a colour image as grey, when the caller chose one."""
    if choice.sample is None or image.ndim == 2:
        return image
    return np.ascontiguousarray(image[..., choice.sample])


def _info(header: imageheader.Header) -> ImageInfo:
    return ImageInfo(header.format, header.width, header.height, header.channels, header.dtype)


def _refuse_oversized(info: ImageInfo, max_pixels: int) -> None:
    if info.pixels > max_pixels:
        raise ImageTooLarge(
            f"image is {info.width}x{info.height} = {info.pixels} pixels; "
            f"the limit is {max_pixels} pixels"
        )


def _as_described(image: np.ndarray, info: ImageInfo) -> np.ndarray:
    if image.shape != info.shape or image.dtype != np.dtype(info.dtype):
        raise InvalidImage(
            f"decoded {info.format.upper()} has shape {image.shape} {image.dtype}, but its "
            f"header says {info.shape} {info.dtype}"
        )
    return image


def _decode_opencv(data: bytes, info: ImageInfo) -> np.ndarray:
    """Decode PNG or JPEG with OpenCV, in RGB(A) order."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InvalidImage(f"corrupt {info.format.upper()}: {exc.msg}") from exc
    if image is None or image.size == 0:
        raise InvalidImage(f"corrupt {info.format.upper()}: the decoder could not read it")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _decode_tiff(
    data: bytes, max_pixels: int, plane: int | None, channel: int | None
) -> np.ndarray:
    """Header, choice, size limit, completeness and the chosen page's pixels, from one
    tifffile parse."""
    with _engine_errors():
        tif = open_tiff(data)
    with tif:
        with _engine_errors():
            header = imageheader.check_sides(header_of(tif))
            choice = imageheader.choose(header, plane, channel)
            info = _info(header)
        _refuse_oversized(info, max_pixels)
        with _engine_errors():
            check_complete_of(tif, len(data))
            page = first_page(tif)
            index = page_index(tif, choice.plane, choice.channel)
        try:
            raw = page.asarray() if index == 0 else tif.asarray(key=index, series=0)
        except KeyError as exc:  # tifffile: "<COMPRESSION.X> requires the 'imagecodecs' package"
            raise UnsupportedFormat(
                f"TIFF compression {enum_name(page.compression)} is not supported here"
            ) from exc
        except Exception as exc:  # tifffile/imagecodecs raise many types on corrupt input
            raise InvalidImage(f"corrupt TIFF: {exc}") from exc
    separate, _, height, width, contig = page.shaped
    image: np.ndarray = np.asarray(raw).reshape(separate, height, width, contig)
    image = np.moveaxis(image[..., 0], 0, -1) if separate > 1 else image[0]
    if info.channels == 1:
        image = image.reshape(height, width)
    if image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)
        if not np.isfinite(image).all():
            raise InvalidImage("TIFF contains NaN or infinite pixel values")
    return _pick(_as_described(np.ascontiguousarray(image), info), choice)
