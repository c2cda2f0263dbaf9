"""Object size: rescaling an image so its objects have the diameter a model was trained for,
mapping the output back, and estimating the diameter of the objects found.

Pure functions; shapes are ``(H, W)`` or ``(H, W, C)`` as decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ml_service.errors import InvalidParameters

_CV_DTYPES = (np.uint8, np.uint16, np.float32)


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H, W)`` times ``scale``, rounded, at least 1 pixel each."""
    height, width = shape
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale_image(image: np.ndarray, scale: float, max_pixels: int) -> np.ndarray:
    """Resize a decoded image by ``scale`` (area averaging when shrinking, bilinear when
    enlarging); ``scale == 1`` returns it unchanged.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` real array (C <= 4).
        scale: factor ``> 0`` applied to both sides.
        max_pixels: the rescaled image may hold at most this many pixels.

    Returns:
        ``(h, w)`` or ``(h, w, C)`` array with ``(h, w) == scaled_shape((H, W), scale)``, the
        input's dtype when OpenCV resizes it (uint8, uint16, float32), else float32.

    Raises:
        InvalidParameters: the rescaled image would exceed ``max_pixels``.
    """
    if scale == 1.0:
        return image
    height, width = scaled_shape((image.shape[0], image.shape[1]), scale)
    if height * width > max_pixels:
        raise InvalidParameters(
            f"diameter rescales the image by {scale:.3g} to {width}x{height} pixels, over "
            f"MAX_IMAGE_PIXELS ({max_pixels}); give a larger diameter or a smaller image"
        )
    src = image if image.dtype in _CV_DTYPES else image.astype(np.float32)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(src), (width, height), interpolation=interpolation)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[..., None]
    return np.asarray(out)


def resize_map(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``(h, w)`` float map resized (bilinear) to ``shape`` ``(H, W)``, float32; unchanged
    when it already has that shape."""
    if prob.shape == shape:
        return prob
    height, width = shape
    src = np.ascontiguousarray(prob, dtype=np.float32)
    return np.asarray(cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR))


def median_diameter(diameters: Sequence[float]) -> float | None:
    """Median of the objects' equivalent diameters (px), or None when there is none."""
    values = [d for d in diameters if math.isfinite(d) and d > 0]
    return float(np.median(values)) if values else None
