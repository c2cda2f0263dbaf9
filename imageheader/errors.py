"""What can be wrong with an image header: one small typed hierarchy.

Each side maps these to its own errors: the engine to ``ml_service.errors``, the gateway to
``backend.errors`` with HTTP status codes. Every error carries a message fit for a user.
"""

from __future__ import annotations


class HeaderError(ValueError):
    """Base class: the bytes are not an image this project reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Empty(HeaderError):
    """There are no bytes at all."""


class UnknownFormat(HeaderError):
    """The magic bytes are not those of PNG, JPEG or TIFF."""


class Truncated(HeaderError):
    """The file ends early: inside its signature, its header or before its last pixel data."""


class Corrupt(HeaderError):
    """The header or the container structure is malformed (bad IHDR, CRC, marker order...)."""


class Degenerate(HeaderError):
    """The width or the height is below :data:`imageheader.MIN_SIDE`."""


class UnsupportedPixels(HeaderError):
    """A well-formed image whose pixel layout is not read (bit depth, channels, z-stack...)."""


class StackChoice(HeaderError):
    """A stack (several planes or channels) with no valid choice of which one to read; the
    message says what the file holds and how to choose (``plane``, ``channel``)."""
