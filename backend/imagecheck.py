"""Gateway-side check of an uploaded image from its header, without decoding a pixel.

The gateway may not import the engine (``ml_service``); both read headers through the shared
:mod:`imageheader` package, so what passes here decodes there. This module adds what is the
gateway's own: reading a stored upload through an mmap, the ``MAX_IMAGE_PIXELS`` limit, and the
mapping of :mod:`imageheader` errors to HTTP errors.

In order, :func:`check_image` refuses:

1. an empty file: 422 ``empty_file``;
2. a format other than PNG, JPEG or TIFF (by magic bytes): 415 ``unsupported_format``;
3. a corrupt header, a degenerate size (width or height < 2) or a pixel type the engine does not
   read (e.g. 2 or more than 4 channels, 12-bit JPEG, int32/complex TIFF): 422 ``invalid_image``;
4. more than ``max_pixels`` pixels: 413 ``image_too_large``;
5. a truncated file: 422 ``invalid_image``. PNG: the chunk walk must reach ``IEND`` inside the
   file (and have seen ``IDAT``); JPEG: an end-of-image marker (``FFD9``) must follow the first
   scan (trailing padding after it is allowed); TIFF: the first page's strips/tiles lie in the
   file. Chunk CRCs are left to the engine.

Once the request's parameters are known, :func:`check_choice` refuses a stack (a TIFF of several
planes or channel planes) without a ``plane``/``channel`` choice, or with one the file does not
hold: 422 ``choose_plane_or_channel``, saying what the file holds; :func:`check_diameter` an
object ``diameter`` larger than the image: 422 ``invalid_diameter``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageheader
from backend.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from imageheader import MIN_SIDE, SUPPORTED_FORMATS

__all__ = [
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "ImageHeader",
    "check_choice",
    "check_image",
    "detect_format",
]


@dataclass(frozen=True)
class ImageHeader:
    """What an upload's header says: the fields of :class:`imageheader.Header` but ``dtype``."""

    format: str
    width: int
    height: int
    channels: int
    bit_depth: int
    planes: int = 1
    channel_planes: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


@contextmanager
def _api_errors() -> Iterator[None]:
    """Raise :mod:`imageheader` errors as the gateway's API errors."""
    try:
        yield
    except imageheader.Empty as exc:
        raise ValidationFailed("empty_file", "the file is empty") from exc
    except imageheader.UnknownFormat as exc:
        raise UnsupportedMediaType("unsupported_format", exc.message) from exc
    except imageheader.HeaderError as exc:
        raise ValidationFailed("invalid_image", exc.message) from exc


def detect_format(head: bytes) -> str:
    """Name the format from the first bytes of a file (at least 8 when the file has them).

    Raises:
        ValidationFailed: ``empty_file`` when ``head`` is empty; ``invalid_image`` when it ends
            inside a signature.
        UnsupportedMediaType: ``unsupported_format`` for anything but PNG, JPEG, TIFF.
    """
    with _api_errors():
        return imageheader.detect_format(head)


def check_image(path: Path, max_pixels: int) -> ImageHeader:
    """Check one stored upload from its header (see the module docstring for the rules).

    Blocking file IO: call it from a worker thread in async code.

    Raises:
        ApiError: ``empty_file`` (422), ``unsupported_format`` (415), ``invalid_image`` (422),
            ``image_too_large`` (413).
    """
    with open(path, "rb") as f:
        detect_format(f.read(8))  # also refuses an empty file, which cannot be mapped
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data, _api_errors():
            found = imageheader.read_header(data)
            header = ImageHeader(
                found.format,
                found.width,
                found.height,
                found.channels,
                found.bit_depth,
                found.planes,
                found.channel_planes,
            )
            if header.pixels > max_pixels:
                raise PayloadTooLarge(
                    "image_too_large",
                    f"image is {header.width}x{header.height} = {header.pixels} pixels; the "
                    f"limit (MAX_IMAGE_PIXELS) is {max_pixels} pixels",
                )
            imageheader.check_complete(data, header.format, check_crc=False)
    return header


def check_choice(header: ImageHeader, plane: int | None, channel: int | None, name: str) -> None:
    """Refuse a stack without a ``plane``/``channel`` choice, or a choice the file does not
    hold (:func:`imageheader.choose`), naming the file and what it holds.

    Raises:
        ValidationFailed: 422 ``choose_plane_or_channel``.
    """
    try:
        imageheader.choose(header, plane, channel, name)
    except imageheader.StackChoice as exc:
        raise ValidationFailed("choose_plane_or_channel", exc.message) from exc


def check_diameter(diameter: float | str | None, width: int, height: int) -> None:
    """Refuse an object ``diameter`` (pixels) larger than the image's longer side.

    Raises:
        ValidationFailed: 422 ``invalid_diameter``.
    """
    if isinstance(diameter, int | float) and diameter > max(width, height):
        raise ValidationFailed(
            "invalid_diameter",
            f"diameter {diameter:g} px is larger than the image ({width}x{height} pixels)",
        )
