"""What the one-channel models are trained to output, derived from instance labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def separated_foreground(labels: np.ndarray) -> np.ndarray:
    """The foreground with a two-pixel gap wherever two instances touch.

    A pixel of an object is dropped when one of its 8 neighbours belongs to another object, so
    touching objects are no longer 8-connected and connected components of the model's
    thresholded output come out as separate instances. Isolated objects keep every pixel.

    Args:
        labels: ``(H, W)`` integer instance labels, 0 background.

    Returns:
        ``(H, W)`` uint8, 1 on the kept foreground.
    """
    lab = labels.astype(np.int64, copy=False)
    highest = ndi.maximum_filter(lab, size=3, mode="constant", cval=0)
    lowest = ndi.minimum_filter(np.where(lab > 0, lab, highest.max() + 1), size=3, mode="nearest")
    return ((lab > 0) & (highest == lab) & (lowest == lab)).astype(np.uint8)


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-circle diameter ``2 sqrt(area / pi)`` of each instance, in pixels.

    Args:
        labels: ``(H, W)`` integer instance labels, 0 background.

    Returns:
        ``(N,)`` float64, one per label present.
    """
    areas = np.bincount(labels.ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    return np.asarray(2.0 * np.sqrt(areas / np.pi), dtype=np.float64)
