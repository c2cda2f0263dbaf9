"""A preview of an image for people to look at: 8-bit, with the engine's auto-contrast.

Browsers cannot show most microscopy files (TIFF, 16-bit, floating point, stacks), and a dim
12-bit image in a 16-bit file looks black when shown as it is. The preview maps the image's
1st..99.8th percentiles to black..white with
:func:`~ml_service.imaging.preprocess.normalize_percentile`, the normalisation the models see:
grey images through the same grey conversion, colour images with one pair of percentiles over
all three colours (so their hues stay; alpha is dropped). Large images are scaled down to
:data:`MAX_PREVIEW_SIDE`; the viewer draws outlines in image coordinates over it at any scale.
"""

from __future__ import annotations

import cv2
import numpy as np

from ml_service.errors import InvalidImage
from ml_service.imaging.preprocess import check_image, normalize_percentile, to_grey_float

MAX_PREVIEW_SIDE = 2048


def preview_array(image: np.ndarray, max_side: int = MAX_PREVIEW_SIDE) -> np.ndarray:
    """The preview's pixels: ``(h, w)`` grey or ``(h, w, 3)`` RGB uint8, ``h, w <= max_side``.

    Args:
        image: a decoded image, ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` of a
            real dtype (as ``ml_service.imaging.imageio.decode_image`` returns).
        max_side: the longest side of the preview.

    Raises:
        InvalidImage: not an image shape or dtype.
    """
    check_image(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        scaled = normalize_percentile(image[..., :3])
    else:
        scaled = normalize_percentile(to_grey_float(image))
    height, width = scaled.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        scaled = cv2.resize(scaled, size, interpolation=cv2.INTER_AREA)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def preview_png(image: np.ndarray, max_side: int = MAX_PREVIEW_SIDE) -> bytes:
    """:func:`preview_array` encoded as PNG."""
    pixels = preview_array(image, max_side)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 grey or BGR array
        raise InvalidImage("cannot encode the preview")
    return bytes(buf.tobytes())
