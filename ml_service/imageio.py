"""Decoding uploaded image bytes into arrays, safely.

Supported containers are PNG, JPEG and TIFF (see :data:`SUPPORTED_FORMATS`). Everything that
can be learned from the header is checked before a single pixel is decoded, so a decompression
bomb (a tiny file that claims billions of pixels) is refused without allocating its pixels:

1. the magic bytes name the format, else :class:`~ml_service.errors.UnsupportedFormat`;
2. :func:`read_image_info` parses the header (PNG ``IHDR``, JPEG ``SOFn``, the first TIFF IFD)
   and refuses degenerate sizes and pixel types the engine does not read;
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
- TIFF: the first page of a multi-page file. ImageJ hyperstacks and OME-TIFFs whose metadata
  declare more than one z-plane, and pages that are themselves volumes, are refused (a z-stack is
  not one image). Photometric grey (min-is-black or min-is-white, values returned as stored),
  RGB and YCbCr; 1, 3 or 4 samples; uint8, uint16 or float (returned as float32). Compressions
  beyond deflate/LZMA need the ``imagecodecs`` package; without it they are refused as
  unsupported.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile

from ml_service.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff")
"""Container formats :func:`decode_image` reads."""

MIN_SIDE = 2
"""Smallest accepted width and height in pixels; a 0- or 1-pixel-wide image is degenerate."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

# PNG colour type -> channels OpenCV returns (without / with a tRNS chunk), allowed bit depths.
_PNG_COLOUR_TYPES: dict[int, tuple[int, int, tuple[int, ...]]] = {
    0: (1, 1, (1, 2, 4, 8, 16)),  # grey; OpenCV ignores tRNS here
    2: (3, 4, (8, 16)),  # RGB
    3: (3, 4, (1, 2, 4, 8)),  # palette
    4: (4, 4, (8, 16)),  # grey + alpha, expanded to RGBA
    6: (4, 4, (8, 16)),  # RGBA
}

# JPEG start-of-frame markers (all SOFn but DHT C4, JPG C8 and DAC CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}

_TIFF_PHOTOMETRIC = {
    tifffile.PHOTOMETRIC.MINISWHITE,
    tifffile.PHOTOMETRIC.MINISBLACK,
    tifffile.PHOTOMETRIC.RGB,
    tifffile.PHOTOMETRIC.YCBCR,
}


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


def detect_format(data: bytes) -> str:
    """Name the container format from the magic bytes.

    Raises:
        InvalidImage: ``data`` is empty.
        UnsupportedFormat: the magic bytes are not those of a supported format.
    """
    if not data:
        raise InvalidImage("empty upload: no image bytes")
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    raise UnsupportedFormat(
        "unrecognised image format; supported formats: " + ", ".join(SUPPORTED_FORMATS).upper()
    )


def read_image_info(data: bytes) -> ImageInfo:
    """Describe an image from its header alone, without decoding pixels.

    Raises:
        InvalidImage: empty, truncated or corrupt header, or a degenerate size
            (width or height below :data:`MIN_SIDE`).
        UnsupportedFormat: unknown format, or a pixel type the engine does not read.
    """
    fmt = detect_format(data)
    if fmt == "png":
        info = _png_info(data)
    elif fmt == "jpeg":
        info, _ = _jpeg_info(data)
    else:
        info = _tiff_info(data)
    if info.width < MIN_SIDE or info.height < MIN_SIDE:
        raise InvalidImage(
            f"degenerate image size {info.width}x{info.height}: width and height must be at "
            f"least {MIN_SIDE} pixels"
        )
    return info


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode PNG, JPEG or TIFF bytes into an array, refusing oversized or damaged files.

    Args:
        data: the uploaded file's bytes.
        max_pixels: largest accepted ``width * height``; checked from the header before any
            pixel is decoded.

    Returns:
        ``(H, W)`` grey or ``(H, W, C)`` array (``C = 3`` RGB or ``C = 4`` RGBA) of dtype
        uint8 or uint16, or float32 for floating-point TIFFs. Its shape and dtype are those of
        :func:`read_image_info`.

    Raises:
        InvalidImage: empty, truncated, corrupt or degenerate image.
        UnsupportedFormat: unknown format or unsupported pixel type.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    info = read_image_info(data)
    if info.pixels > max_pixels:
        raise ImageTooLarge(
            f"image is {info.width}x{info.height} = {info.pixels} pixels; "
            f"the limit is {max_pixels} pixels"
        )
    if info.format == "png":
        _check_png_complete(data)
        image = _decode_opencv(data, info)
    elif info.format == "jpeg":
        _check_jpeg_complete(data)
        image = _decode_opencv(data, info)
    else:
        image = _decode_tiff(data, info)
    if image.shape != info.shape or image.dtype != np.dtype(info.dtype):
        raise InvalidImage(
            f"decoded {info.format.upper()} has shape {image.shape} {image.dtype}, but its "
            f"header says {info.shape} {info.dtype}"
        )
    return image


# --- PNG ---------------------------------------------------------------------------------------


def _png_chunks(data: bytes, check_crc: bool) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(type, payload)`` of each chunk; raise InvalidImage on a cut or corrupt one."""
    pos = len(_PNG_MAGIC)
    while True:
        if pos + 8 > len(data):
            raise InvalidImage("truncated PNG: file ends before the IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise InvalidImage(f"truncated PNG: chunk {ctype!r} is cut short")
        payload = data[pos + 8 : pos + 8 + length]
        if check_crc:
            (crc,) = struct.unpack(">I", data[end - 4 : end])
            if zlib.crc32(payload, zlib.crc32(ctype)) != crc:
                raise InvalidImage(f"corrupt PNG: CRC mismatch in chunk {ctype!r}")
        yield ctype, payload
        if ctype == b"IEND":
            return
        pos = end


def _png_info(data: bytes) -> ImageInfo:
    chunks = _png_chunks(data, check_crc=False)
    ctype, ihdr = next(chunks)
    if ctype != b"IHDR" or len(ihdr) != 13:
        raise InvalidImage("corrupt PNG: the first chunk is not a valid IHDR")
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", ihdr)
    if colour not in _PNG_COLOUR_TYPES or depth not in _PNG_COLOUR_TYPES[colour][2]:
        raise InvalidImage(f"corrupt PNG: invalid colour type {colour} / bit depth {depth}")
    plain, with_trns, _ = _PNG_COLOUR_TYPES[colour]
    has_trns = False
    for ctype, _ in chunks:  # tRNS must precede IDAT, so this stops early
        if ctype == b"tRNS":
            has_trns = True
        if ctype in (b"IDAT", b"tRNS"):
            break
    return ImageInfo(
        format="png",
        width=width,
        height=height,
        channels=with_trns if has_trns else plain,
        dtype="uint16" if depth == 16 else "uint8",
    )


def _check_png_complete(data: bytes) -> None:
    seen_idat = False
    for ctype, _ in _png_chunks(data, check_crc=True):
        seen_idat = seen_idat or ctype == b"IDAT"
    if not seen_idat:
        raise InvalidImage("corrupt PNG: no IDAT (pixel data) chunk")


# --- JPEG --------------------------------------------------------------------------------------


def _jpeg_info(data: bytes) -> tuple[ImageInfo, int]:
    """Parse markers up to the first scan; return the info and the offset of the first SOS."""
    pos = 2
    frame: tuple[int, int, int, int] | None = None
    while True:
        pos = data.find(b"\xff", pos)  # tolerate garbage between segments, as libjpeg does
        if pos < 0:
            raise InvalidImage("truncated JPEG: file ends before the first scan")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= len(data):
            raise InvalidImage("truncated JPEG: file ends before the first scan")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise InvalidImage("corrupt JPEG: end of image before any scan")
        if pos + 2 > len(data):
            raise InvalidImage("truncated JPEG: segment header cut short")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > len(data):
            raise InvalidImage(f"truncated JPEG: segment 0xFF{marker:02X} cut short")
        if marker in _JPEG_SOF:
            if length < 8:
                raise InvalidImage("corrupt JPEG: start-of-frame segment too short")
            frame = struct.unpack(">BHHB", data[pos + 2 : pos + 8])
        if marker == 0xDA:
            if frame is None:
                raise InvalidImage("corrupt JPEG: scan before any start-of-frame segment")
            break
        pos += length
    precision, height, width, components = frame
    if precision != 8:
        raise UnsupportedFormat(f"{precision}-bit JPEG is not supported; only 8-bit JPEG")
    if components not in (1, 3, 4):
        raise UnsupportedFormat(f"JPEG with {components} components is not supported")
    info = ImageInfo(
        format="jpeg",
        width=width,
        height=height,
        channels=1 if components == 1 else 3,
        dtype="uint8",
    )
    return info, pos - 1


def _check_jpeg_complete(data: bytes) -> None:
    _, first_scan = _jpeg_info(data)
    # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed there), so an EOI after
    # the first scan marks a complete file; a thumbnail's EOI always lies before it.
    if data.rfind(b"\xff\xd9") < first_scan:
        raise InvalidImage("truncated JPEG: no end-of-image marker after the image data")


def _decode_opencv(data: bytes, info: ImageInfo) -> np.ndarray:
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


# --- TIFF --------------------------------------------------------------------------------------


def _name(value: object) -> str:
    """Name of a tifffile enum member (or the raw value when it is not one)."""
    return str(getattr(value, "name", value))


def _open_tiff(data: bytes) -> tifffile.TiffFile:
    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise InvalidImage(f"corrupt TIFF: {exc}") from exc
    return tif


def _first_page(tif: tifffile.TiffFile) -> tifffile.TiffPage:
    try:
        page = tif.pages.first
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise InvalidImage(f"corrupt TIFF: cannot read the first page: {exc}") from exc
    if not isinstance(page, tifffile.TiffPage):
        raise InvalidImage("corrupt TIFF: the first page is not a readable image")
    return page


def _z_planes(tif: tifffile.TiffFile) -> int:
    """Number of z-planes the file's ImageJ or OME metadata declare (1 when none)."""
    try:
        if tif.is_imagej:
            return int((tif.imagej_metadata or {}).get("slices", 1))
        if tif.is_ome:
            series = tif.series[0]
            if "Z" in series.axes:
                return int(series.shape[series.axes.index("Z")])
    except Exception:  # unreadable metadata: fall back to plain multi-page handling
        return 1
    return 1


def _tiff_info(data: bytes) -> ImageInfo:
    with _open_tiff(data) as tif:
        page = _first_page(tif)
        planes = _z_planes(tif)
        if planes > 1:
            raise UnsupportedFormat(
                f"TIFF is a 3D stack with {planes} z-planes; send a single 2D plane"
            )
        separate, depth, height, width, contig = page.shaped
        if depth > 1:
            raise UnsupportedFormat(
                f"TIFF page is a 3D volume with {depth} z-planes; send a single 2D plane"
            )
        if page.photometric not in _TIFF_PHOTOMETRIC:
            raise UnsupportedFormat(
                f"TIFF photometric {_name(page.photometric)} is not supported; "
                "supported: grey, RGB, YCbCr"
            )
        channels = separate * contig
        if channels not in (1, 3, 4):
            raise UnsupportedFormat(
                f"TIFF with {channels} samples per pixel is not supported; "
                "supported: 1 (grey), 3 (RGB), 4 (RGBA)"
            )
        dtype = page.dtype
        if dtype is None:
            raise UnsupportedFormat(
                f"TIFF pixel type ({page.bitspersample}-bit, sample format "
                f"{_name(page.sampleformat)}) is not supported"
            )
        if dtype.kind == "f":
            out_dtype = "float32"
        elif dtype in (np.uint8, np.uint16):
            out_dtype = dtype.name
        else:
            raise UnsupportedFormat(
                f"TIFF pixel type {dtype.name} is not supported; supported: uint8, uint16, float"
            )
    return ImageInfo(format="tiff", width=width, height=height, channels=channels, dtype=out_dtype)


def _decode_tiff(data: bytes, info: ImageInfo) -> np.ndarray:
    with _open_tiff(data) as tif:
        page = _first_page(tif)
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if offset + count > len(data):
                raise InvalidImage("truncated TIFF: pixel data runs past the end of the file")
        try:
            raw = page.asarray()
        except KeyError as exc:  # tifffile: "<COMPRESSION.X> requires the 'imagecodecs' package"
            raise UnsupportedFormat(
                f"TIFF compression {_name(page.compression)} is not supported here"
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
    return np.ascontiguousarray(image)
