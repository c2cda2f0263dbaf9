"""Instance separation: a binary foreground mask -> touching objects as separate instances.

Marker-controlled watershed of the distance transform, restricted to the mask:

1. ``distance``: Euclidean distance of each foreground pixel to the background
   (``cv2.distanceTransform``, exact), smoothed with a Gaussian of :data:`SMOOTHING_SIGMA`
   px so pixel staircases on outlines do not make maxima.
2. Markers: the maxima of ``log(distance)`` whose *dynamic* (how far the map falls on every path
   to a higher maximum) is at least ``-log(1 - t)``; in linear terms a maximum ``p`` becomes a
   marker when every path to a higher one dips below ``(1 - t) p``. Relative dynamics make the
   rule independent of object size: two discs of radius ``r`` overlapping so that the waist is
   narrower than ``(1 - t)`` of the radius are split, whatever ``r`` is. ``t`` is
   :data:`SPLIT_DEPTH` for ordinary objects, the stricter :data:`LARGE_SPLIT_DEPTH` for objects
   whose distance map peaks above :data:`LARGE_RADIUS_PX` (spheroids and other large blobs,
   whose irregular outline makes shallow maxima) and :data:`HOLED_SPLIT_DEPTH` for objects with
   a hole (rings, whose ridge has a maximum at each thick part). Ordinary objects are searched
   in one full-image pass; each large or holed object in its own bounding box, shrunk so that
   its inscribed radius is about :data:`MARKER_RADIUS_PX` (same rule, a fraction of the cost).
3. ``skimage.segmentation.watershed`` of ``-distance`` from the markers, within the mask; a
   component that got no marker stays one object.
4. Bent pieces are merged back (:data:`BENT_SOLIDITY`): touching blobs split into convex-ish
   pieces, while a cut ring, a curved rod or an annulus of uneven thickness leaves C-shaped
   pieces; the least solid such piece joins the neighbour it shares the longest border with
   until none is left, which gives the ring or the rod back whole.

Holes stay holes (the watershed never leaves the mask). The constants were chosen by measuring
average precision on held-out synthetic scenes and on the models' masks of them
(docs/benchmarks.md, "Instance separation").
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.ndimage import find_objects
from skimage.segmentation import watershed

SPLIT_DEPTH = 0.1
"""Relative depth of the waist between two ordinary objects needed to split them."""

LARGE_SPLIT_DEPTH = 0.4
"""The same for large objects and objects with a hole."""

LARGE_RADIUS_PX = 25.0
"""Objects whose distance map peaks above this (at ``size_scale`` 1) count as large."""

SMOOTHING_SIGMA = 1.0
"""Gaussian sigma (px, at ``size_scale`` 1) applied to the distance map."""

HOLED_SPLIT_DEPTH = 0.4
"""The same for objects with a hole that are not large."""

MARKER_RADIUS_PX = 40.0
"""Large objects are shrunk until their inscribed radius is about this before their markers
are searched (the relative-depth rule does not depend on scale; the cost does)."""

BENT_SOLIDITY = 0.8
"""A watershed piece less solid than this (area over convex-hull area, holes filled) is merged
back into its neighbour: touching blobs split into convex-ish pieces, a cut ring or rod does
not."""

_FLOOR_PX = 2.0
"""Distances are clipped below at this before the logarithm (thin slivers make no markers)."""


def split_instances(foreground: np.ndarray, size_scale: float = 1.0) -> np.ndarray:
    """Label the objects of a foreground mask, separating touching objects.

    Args:
        foreground: ``(H, W)`` bool (or 0/1 integer) mask, True on objects.
        size_scale: how many pixels of this image make one pixel of the frame the constants
            are set for (objects ``size_scale`` times larger than the model was trained on:
            the smoothing and the "large" radius scale with it); ``> 0``.

    Returns:
        ``(H, W)`` int32 labels, 0 on background and in holes, objects ``1..n``; every object
        is one 8-connected region within one 8-connected component of ``foreground``.

    Raises:
        ValueError: ``foreground`` is not 2-D, or ``size_scale <= 0``.
    """
    if foreground.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {foreground.shape}")
    if not size_scale > 0:
        raise ValueError(f"size_scale must be > 0, got {size_scale}")
    mask8 = np.ascontiguousarray(foreground != 0, dtype=np.uint8)
    n, components, stats, _ = cv2.connectedComponentsWithStats(
        mask8, connectivity=8, ltype=cv2.CV_32S
    )
    if n <= 1:
        return components
    distance = cv2.distanceTransform(mask8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    peak = np.zeros(n, np.float32)
    on = mask8 > 0
    np.maximum.at(peak, components[on], distance[on])  # type: ignore[arg-type]
    large = peak > LARGE_RADIUS_PX * size_scale
    depth = np.where(large, LARGE_SPLIT_DEPTH, HOLED_SPLIT_DEPTH)
    holed = np.zeros(n, bool)
    holed[_holed(mask8, components)] = True
    large |= holed
    large[0] = False
    labels = components.copy()
    top = n
    for index in np.flatnonzero(large):
        factor = max(1.0, float(peak[index]) / MARKER_RADIUS_PX)
        box = _box(stats[index], mask8.shape, math.ceil(factor) + 1)
        inside = components[box] == index
        pieces = _split_large(inside, distance[box], factor, size_scale, float(depth[index]))
        if pieces.max() > 1:
            labels[box] = np.where(inside, pieces + (top - 1), labels[box])
            top += int(pieces.max())
    small = ~large
    small[0] = False
    if small.any():
        top = _split_small(mask8, components, small, distance, size_scale, labels, top)
    return _consecutive(labels)


def _box(stat: np.ndarray, shape: tuple[int, ...], margin: int) -> tuple[slice, slice]:
    """The bounding box of one ``connectedComponentsWithStats`` row, ``margin`` px wider
    (within the image)."""
    x, y, w, h = (int(v) for v in stat[:4])
    return (
        slice(max(y - margin, 0), min(y + h + margin, shape[0])),
        slice(max(x - margin, 0), min(x + w + margin, shape[1])),
    )


def _holed(mask8: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Indices of the components that enclose a hole (a 4-connected background region that
    does not reach the image's edge)."""
    n, background, stats, _ = cv2.connectedComponentsWithStats(
        1 - mask8, connectivity=4, ltype=cv2.CV_32S
    )
    x, y, w, h = (stats[1:, i] for i in range(4))
    height, width = mask8.shape
    inner = np.flatnonzero((x > 0) & (y > 0) & (x + w < width) & (y + h < height)) + 1
    if not len(inner):
        return np.zeros(0, np.intp)
    # a hole's first pixel in raster order has the enclosing object on its left
    enclosing = set()
    for index in inner.tolist():
        top = int(stats[index, cv2.CC_STAT_TOP])
        first = int(np.argmax(background[top] == index))
        enclosing.add(int(components[top, first - 1]))
    return np.array(sorted(enclosing), np.intp)


def _split_small(
    mask8: np.ndarray,
    components: np.ndarray,
    small: np.ndarray,
    distance: np.ndarray,
    size_scale: float,
    labels: np.ndarray,
    top: int,
) -> int:
    """Split the ordinary components (``small[index]``) in place in ``labels``, in one
    full-image pass (their reconstruction converges in a few rounds: none is large); returns
    the next free label."""
    keep = small[components]
    sigma = SMOOTHING_SIGMA * size_scale
    smooth = cv2.GaussianBlur(distance, (0, 0), sigma) if sigma > 0 else distance
    markers = _markers(keep, smooth, SPLIT_DEPTH)
    per_component = np.bincount(components[markers > 0], minlength=len(small))
    multi = (per_component >= 2) & small
    if not multi.any():
        return top
    region = multi[components]
    rows, cols = np.nonzero(region)
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    inside = region[box]
    split = watershed(-smooth[box], np.where(inside, markers[box], 0), mask=inside)
    split = _merge_bent(split, components[box])
    labels[box] = np.where(inside, split + (top - 1), labels[box])
    return top + int(split.max())


def _split_large(
    inside: np.ndarray, distance: np.ndarray, factor: float, size_scale: float, depth: float
) -> np.ndarray:
    """Pieces ``1..k`` of one large or holed component (``inside``, its box; ``distance``, the
    image's distance map there), 0 outside it.

    The relative-depth rule does not depend on scale, so the markers are searched on the mask
    shrunk by ``factor`` (its inscribed radius then about :data:`MARKER_RADIUS_PX`): the box's
    pixels over the factor squared, and a reconstruction that many times shorter. The box
    reaches past the object on every side not on the image's edge, so, as in the full image,
    the image's edge does not count as background."""
    mask8 = inside.astype(np.uint8)
    h, w = mask8.shape
    shrink = factor > 1.5
    if shrink:
        size = (max(round(w / factor), 3), max(round(h / factor), 3))
        small = cv2.resize(mask8 * 255, size, interpolation=cv2.INTER_AREA) >= 128
        near = cv2.distanceTransform(small.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        smooth = near  # the area-averaged shrink already smooths the outline
    else:
        small = inside
        sigma = SMOOTHING_SIGMA * size_scale
        smooth = cv2.GaussianBlur(distance, (0, 0), sigma) if sigma > 0 else distance
    markers = _markers(small, smooth, depth)
    if markers.max() < 2:
        return mask8.astype(np.int32)
    if shrink:
        markers = cv2.resize(markers.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        markers = markers.astype(np.int32)
        markers[~inside] = 0
        if len(np.unique(markers)) < 3:
            return mask8.astype(np.int32)
    split = watershed(-distance, markers, mask=inside)
    return _consecutive(_merge_bent(split, mask8))


def _merge_bent(pieces: np.ndarray, component: np.ndarray) -> np.ndarray:
    """Undo the cuts that leave a bent piece: while some piece's solidity (its area, holes
    filled, over its convex hull's) is below :data:`BENT_SOLIDITY`, merge the least solid one
    into the neighbour it shares the longest border with. Watershed pieces of touching blobs
    are convex-ish; the pieces of a cut ring or of a curved rod are not, and merging them
    gives the ring or the rod back. ``component`` (same shape) keeps merges within one
    connected component. Returns the pieces relabelled in place (labels may have gaps)."""
    count = int(pieces.max())
    if count < 2:
        return pieces
    slices: list[tuple[slice, ...] | None] = [None, *find_objects(pieces)]
    solidity = np.ones(count + 1)
    for index, where in enumerate(slices):
        if where is not None:
            solidity[index] = _solidity(pieces[where] == index)
    contact = _contacts(pieces, component)
    while True:
        bent = [i for i in np.argsort(solidity) if solidity[i] < BENT_SOLIDITY and contact.get(i)]
        if not bent:
            return pieces
        index = int(bent[0])
        into = max(contact[index], key=contact[index].__getitem__)
        a, b = slices[index], slices[into]
        assert a is not None and b is not None
        box = tuple(
            slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
        )
        slices[into], slices[index] = box, None
        view = pieces[box]
        view[view == index] = into
        for other, length in contact.pop(index).items():
            contact[other].pop(index, None)
            if other != into:
                contact[into][other] = contact[into].get(other, 0) + length
                contact[other][into] = contact[into][other]
        solidity[index] = 1.0
        solidity[into] = _solidity(view == into)


def _solidity(piece: np.ndarray) -> float:
    """Area (holes filled) over convex-hull area of one region, both counted in pixels."""
    contours, _ = cv2.findContours(
        piece.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    points = np.vstack(contours)
    filled = np.zeros(piece.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    hull = np.zeros(piece.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return float(np.count_nonzero(filled)) / max(float(np.count_nonzero(hull)), 1.0)


def _contacts(pieces: np.ndarray, component: np.ndarray) -> dict[int, dict[int, int]]:
    """``{piece: {neighbour: border length in pixel pairs}}`` of 4-adjacent pieces of one
    component."""
    contact: dict[int, dict[int, int]] = {}
    for a, b, ca, cb in (
        (pieces[:, :-1], pieces[:, 1:], component[:, :-1], component[:, 1:]),
        (pieces[:-1], pieces[1:], component[:-1], component[1:]),
    ):
        touch = (a != b) & (a > 0) & (b > 0) & (ca == cb)
        stride = int(pieces.max()) + 1
        codes, counts = np.unique(a[touch].astype(np.int64) * stride + b[touch], return_counts=True)
        for code, length in zip(codes.tolist(), counts.tolist(), strict=True):
            p, q = divmod(code, stride)
            for x, y in ((p, q), (q, p)):
                contact.setdefault(x, {})[y] = contact.setdefault(x, {}).get(y, 0) + length
    return contact


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered ``1..k`` in order of their values, 0 kept."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.cumsum(present).astype(np.int32) * present
    return lut[labels]


_QUANTUM = 1.0 / 8192
"""Step of the fixed-point heights the h-maxima transform runs on (uint16)."""


def _markers(inside: np.ndarray, smooth: np.ndarray, depth: float) -> np.ndarray:
    """Watershed markers ``(H, W)`` int32: one label per maximum of ``smooth`` within
    ``inside`` whose relative dynamic is at least ``depth``."""
    h = -math.log(1.0 - depth)
    height = np.log(np.maximum(smooth, _FLOOR_PX)) - math.log(_FLOOR_PX) + 1.0
    height[~inside] = 0.0
    peaks = _h_maxima(np.round(height / _QUANTUM).astype(np.uint16), round(h / _QUANTUM))
    _, markers = cv2.connectedComponents(peaks, connectivity=8, ltype=cv2.CV_32S)
    return markers


def _h_maxima(height: np.ndarray, h: int) -> np.ndarray:
    """Maxima of dynamic ``>= h`` of a uint16 image, as a ``(H, W)`` uint8 0/1 mask: the
    regional maxima of the h-maxima transform (the grey reconstruction by dilation of
    ``height - h`` under ``height``). Maxima of equal height joined by a shallow saddle make one
    plateau of the transform, so they give one marker (the residue ``height - transform >= h``
    would mark each of them)."""
    transform = _reconstruct(cv2.subtract(height, np.full_like(height, h)), height)
    lowered = cv2.subtract(transform, np.ones_like(transform))
    return (transform > _reconstruct(lowered, transform)).astype(np.uint8)


def _reconstruct(marker: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey reconstruction by dilation of ``marker <= mask`` under ``mask`` (8-connected), by
    repeated 3 x 3 dilations (OpenCV) until nothing changes: several times faster here than
    ``skimage.morphology.reconstruction``, which sorts every pixel."""
    kernel = np.ones((3, 3), np.uint8)
    while True:
        previous = marker
        for _ in range(8):
            marker = cv2.min(cv2.dilate(marker, kernel), mask)
        if np.array_equal(marker, previous):
            return marker
