"""The description of an image that its header gives, in terms of the decoded array."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | mmap.mmap
"""What the parsers read: a whole file's bytes, or a read-only mmap of it."""

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff")
"""Container formats read, by the names :class:`Header` uses."""

MIN_SIDE = 2
"""Smallest accepted width and height in pixels; a 0- or 1-pixel-wide image is degenerate."""


@dataclass(frozen=True)
class Header:
    """What a file's header says.

    Attributes:
        format: ``"png"``, ``"jpeg"`` or ``"tiff"``.
        width: pixels per row.
        height: rows.
        channels: channels of the decoded image: 1 (grey), 3 (RGB) or 4 (RGBA); palette PNGs
            count as RGB, grey+alpha as RGBA, and a PNG ``tRNS`` chunk adds alpha to RGB and
            palette images.
        dtype: dtype of the decoded array: ``"uint8"``, ``"uint16"`` or ``"float32"`` (any
            floating-point TIFF).
        bit_depth: bits per sample as stored (PNG IHDR depth, JPEG precision, TIFF
            BitsPerSample).
        planes: 2-D planes of a TIFF stack (z, time, or pages of one series); 1 otherwise.
        channel_planes: channels a TIFF stores as separate planes (an ImageJ/OME ``C`` axis);
            1 otherwise. See :mod:`imageheader.stack` for choosing one.
    """

    format: str
    width: int
    height: int
    channels: int
    dtype: str
    bit_depth: int
    planes: int = 1
    channel_planes: int = 1

    @property
    def pixels(self) -> int:
        """``width * height``."""
        return self.width * self.height
