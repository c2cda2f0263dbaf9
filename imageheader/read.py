"""Format detection, header parsing and completeness checks, dispatched by format."""

from __future__ import annotations

from imageheader import jpeg, png, tiff
from imageheader.errors import Degenerate, Empty, Truncated, UnknownFormat
from imageheader.header import MIN_SIDE, SUPPORTED_FORMATS, Buffer, Header

_MAGICS = (png.MAGIC, jpeg.MAGIC, *tiff.MAGICS)


def detect_format(data: Buffer) -> str:
    """Name the format from the first bytes of a file (8 are enough).

    Raises:
        Empty: ``data`` is empty.
        Truncated: ``data`` is shorter than a signature and ends inside one.
        UnknownFormat: anything but PNG, JPEG or TIFF.
    """
    head = bytes(data[:8])
    if not head:
        raise Empty("empty file: no image bytes")
    if head.startswith(png.MAGIC):
        return "png"
    if head.startswith(jpeg.MAGIC):
        return "jpeg"
    if head[:4] in tiff.MAGICS:
        return "tiff"
    if len(head) < len(png.MAGIC) and any(magic.startswith(head) for magic in _MAGICS):
        raise Truncated("truncated image: the file ends inside its signature")
    raise UnknownFormat(
        "unsupported image format; supported formats: " + ", ".join(SUPPORTED_FORMATS).upper()
    )


def read_header(data: Buffer) -> Header:
    """Describe an image from its header alone, without reading any pixel data.

    Cheap whatever size the header claims: a decompression bomb is described, not decoded. A
    file cut short after its header passes here; :func:`check_complete` finds it.

    Raises:
        HeaderError: :class:`Empty`, :class:`UnknownFormat`, :class:`Truncated` or
            :class:`Corrupt` header, :class:`UnsupportedPixels`, or a :class:`Degenerate` size
            (width or height below :data:`MIN_SIDE`).
    """
    fmt = detect_format(data)
    if fmt == "png":
        header = png.header(data)
    elif fmt == "jpeg":
        header = jpeg.header(data)
    else:
        header = tiff.header(data)
    return check_sides(header)


def check_sides(header: Header) -> Header:
    """``header``, unless its width or height is below :data:`MIN_SIDE`.

    Raises:
        Degenerate: it is.
    """
    if header.width < MIN_SIDE or header.height < MIN_SIDE:
        raise Degenerate(
            f"degenerate image size {header.width}x{header.height}: width and height must be "
            f"at least {MIN_SIDE} pixels"
        )
    return header


def check_complete(data: Buffer, fmt: str, *, check_crc: bool = True) -> None:
    """Check that a file whose header :func:`read_header` read holds all its pixel data.

    Decoders may silently return a partly decoded image, so this runs before decoding. PNG:
    every chunk up to ``IEND`` lies in the file, one is ``IDAT``, and (with ``check_crc``) every
    CRC matches; JPEG: an end-of-image marker follows the first scan; TIFF: the first page's
    strips/tiles lie in the file.

    Raises:
        Truncated: the file is cut short.
        Corrupt: a bad chunk length or CRC, or no pixel data.
    """
    if fmt == "png":
        png.check_complete(data, check_crc)
    elif fmt == "jpeg":
        jpeg.check_complete(data)
    else:
        tiff.check_complete(data)
