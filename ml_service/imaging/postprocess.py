"""Postprocessing: probability map -> label mask and measured objects with outlines.

Coordinate convention (used by every coordinate this module and :mod:`ml_service.imaging.formats`
emit): pixel ``(row r, column c)`` covers the unit square ``[c, c + 1) x [r, r + 1)``, so its
centre is ``(x, y) = (c + 0.5, r + 0.5)``. This is the convention of QuPath, ImageJ, COCO and
GeoJSON in image space, so outlines line up with pixels there without any shift.

- ``polygon`` vertices are the centres of the object's boundary pixels (OpenCV's contour,
  ``CHAIN_APPROX_SIMPLE``), shifted by +0.5; holes likewise trace the pixels around each hole.
  Objects too thin to enclose an area through pixel centres (lines, single pixels) get the convex
  hull of their pixels' corners instead, so every ring is a proper polygon. Rings are oriented
  as RFC 7946 asks, taking the numbers as they are: the exterior has a positive signed
  (shoelace) area, holes a negative one (on screen, with y pointing down, that is clockwise
  and counter-clockwise respectively).
- ``bbox`` ``[x0, y0, x1, y1]`` is the pixel extent, integral: ``labels[y0:y1, x0:x1]``
  holds the object.
- ``centroid`` ``[x, y]`` is the mean of the pixel centres.

Metrics are in pixels and come from scikit-image ``regionprops`` (area = pixel count,
Crofton perimeter - within 1 % of ``2 pi r`` on drawn discs, where the 4-connected
``perimeter`` is 3-5 % long - equivalent diameter, maximum Feret diameter, solidity,
eccentricity, centroid) and OpenCV (convex hull of the object's outline, whose minimum width by
rotating calipers is the minimum Feret diameter). On drawn discs regionprops' maximum Feret
diameter reads about 2 % long (it measures a pixelised convex hull); the minimum reads about a
pixel short of the continuous shape, like the pixel extent.
Circularity is ``4 pi area / perimeter**2`` (about 1 for a disc; it can exceed 1 for objects of a
few pixels, whose perimeter is ill-defined).

Label masks are uint16, so at most :data:`MAX_OBJECTS` objects can be returned; more raise
:class:`~ml_service.errors.InvalidParameters` (raise the threshold or ``min_area``, or send a
smaller region) rather than silently dropping objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import cv2
import numpy as np
from skimage.measure import find_contours, regionprops

from ml_service.errors import InvalidImage, InvalidParameters, TooManyObjects
from ml_service.imaging.instances import split_instances

MAX_OBJECTS = 65535
"""Most objects one label mask (uint16) can hold."""

METRIC_NAMES: tuple[str, ...] = (
    "area",
    "perimeter",
    "circularity",
    "equivalent_diameter",
    "feret_max",
    "feret_min",
    "solidity",
    "eccentricity",
)
"""Names of the scalar measurements of a :class:`SegmentedObject`, in output order."""


@dataclass(frozen=True)
class SegmentedObject:
    """One segmented object, in original-image pixel coordinates (see the module docstring).

    Attributes:
        id: label value in the label mask, 1-based.
        polygon: exterior ring ``[[x, y], ...]`` (not closed: the first point is not repeated).
        holes: interior rings, same form.
        bbox: ``[x0, y0, x1, y1]`` pixel extent (``x1``, ``y1`` exclusive).
        area: pixel count.
        perimeter: Crofton perimeter, px.
        circularity: ``4 pi area / perimeter**2``.
        equivalent_diameter: diameter of the disc of the same area, px.
        feret_max: largest caliper diameter, px.
        feret_min: smallest caliper width, px.
        solidity: area / convex hull area.
        eccentricity: of the ellipse with the same second moments, in ``[0, 1)``.
        centroid: ``[x, y]``.
    """

    id: int
    polygon: list[list[float]]
    holes: list[list[list[float]]]
    bbox: list[int]
    area: float
    perimeter: float
    circularity: float
    equivalent_diameter: float
    feret_max: float
    feret_min: float
    solidity: float
    eccentricity: float
    centroid: list[float]

    def metrics(self) -> dict[str, float]:
        """The scalar measurements, keyed by :data:`METRIC_NAMES`."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


def extract_objects(
    prob: np.ndarray,
    threshold: float,
    min_area: int,
    *,
    split: bool = False,
    size_scale: float = 1.0,
) -> tuple[np.ndarray, list[SegmentedObject]]:
    """Threshold a probability map into 8-connected objects and measure them.

    Args:
        prob: ``(H, W)`` float array, foreground probability in ``[0, 1]``.
        threshold: pixels with ``prob > threshold`` are foreground; ``0 < threshold < 1``.
        min_area: objects with fewer pixels are dropped; ``>= 0``.
        split: separate touching objects (``ml_service.imaging.instances.split_instances``)
            instead of taking each connected component as one object.
        size_scale: object size relative to the model's training frame, for ``split``.

    Returns:
        ``(labels, objects)``: ``labels`` ``(H, W)`` uint16, 0 background and objects numbered
        1..n consecutively in raster order of their first pixel; ``objects[i].id == i + 1``.
        With ``split`` an object is one watershed region, so two objects may touch; holes stay
        background either way.

    Raises:
        InvalidParameters: ``threshold`` or ``min_area`` out of range.
        TooManyObjects: more than :data:`MAX_OBJECTS` objects (an ``InvalidParameters``).
        InvalidImage: ``prob`` is not a non-empty 2D real array.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 < threshold < 1:
        raise InvalidParameters(f"threshold must be in (0, 1), got {threshold!r}")
    if isinstance(min_area, bool) or not isinstance(min_area, Integral) or min_area < 0:
        raise InvalidParameters(f"min_area must be an integer >= 0, got {min_area!r}")
    if prob.ndim != 2 or prob.size == 0 or prob.dtype.kind not in "uif":
        raise InvalidImage(f"expected a non-empty (H, W) probability map, got {prob.shape}")
    foreground = (prob > threshold).astype(np.uint8)
    if split:
        components = split_instances(foreground, size_scale)
        count = int(components.max()) + 1
        areas = np.bincount(components.ravel(), minlength=count)[1:]
        order = _raster_order(components, count)
    else:
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            foreground, connectivity=8, ltype=cv2.CV_32S
        )
        areas = stats[1:, cv2.CC_STAT_AREA]
        order = np.arange(count - 1)
    keep = areas >= min_area
    kept = int(keep.sum())
    if kept > MAX_OBJECTS:
        raise TooManyObjects(
            f"{kept} objects found, more than the {MAX_OBJECTS} a label mask can hold; "
            "raise the threshold or min_area, or segment a smaller region"
        )
    kept_in_order = order[keep[order]]
    lut = np.zeros(count, np.uint16)
    lut[kept_in_order + 1] = np.arange(1, kept + 1, dtype=np.uint16)
    labels = lut[components]
    return labels, objects_from_labels(labels)


def _raster_order(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices ``label - 1`` of labels ``1..count-1`` sorted by the raster index of their first
    pixel (every label in ``1..count-1`` is present)."""
    first = np.full(count, labels.size, np.int64)
    np.minimum.at(first, labels.ravel(), np.arange(labels.size))
    return np.argsort(first[1:], kind="stable")


def objects_from_labels(labels: np.ndarray) -> list[SegmentedObject]:
    """Outline and measure every object of a label image.

    Args:
        labels: ``(H, W)`` non-negative integer array, 0 background; each object is one label
            value (ideally one 8-connected component).

    Returns:
        One :class:`SegmentedObject` per label value present, in increasing label order.
    """
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise InvalidImage(f"expected an (H, W) integer label image, got {labels.shape}")
    return [_measure(region) for region in regionprops(labels)]


def _measure(r: Any) -> SegmentedObject:
    """Measure one ``skimage.measure.regionprops`` region."""
    row0, col0, row1, col1 = (int(v) for v in r.bbox)
    mask = np.ascontiguousarray(r.image, dtype=np.uint8)
    exterior, holes = _outline(mask, col0, row0)
    area = float(r.area)
    perimeter = float(r.perimeter_crofton)
    moments = cv2.moments(mask, binaryImage=True)
    centroid_row = row0 + moments["m01"] / moments["m00"]
    centroid_col = col0 + moments["m10"] / moments["m00"]
    convex_area, feret_max = _convex_metrics(mask)
    return SegmentedObject(
        id=int(r.label),
        polygon=exterior,
        holes=holes,
        bbox=[col0, row0, col1, row1],
        area=area,
        perimeter=perimeter,
        circularity=4.0 * math.pi * area / perimeter**2 if perimeter > 0 else 0.0,
        equivalent_diameter=float(r.equivalent_diameter_area),
        feret_max=feret_max,
        feret_min=_feret_min(mask),
        solidity=area / convex_area,
        eccentricity=_eccentricity(moments),
        centroid=[float(centroid_col) + 0.5, float(centroid_row) + 0.5],
    )


def _outline(
    mask: np.ndarray, x0: int, y0: int
) -> tuple[list[list[float]], list[list[list[float]]]]:
    """Exterior ring and hole rings of one object's cropped mask, in image coordinates."""
    padded = np.pad(mask, 1)
    contours, hierarchy = cv2.findContours(
        padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(x0 - 1, y0 - 1)
    )
    links = hierarchy[0]  # [next, previous, first child, parent] per contour
    outers = [i for i in range(len(contours)) if links[i][3] < 0]
    outer = max(outers, key=lambda i: (cv2.contourArea(contours[i]), len(contours[i])))
    if cv2.contourArea(contours[outer]) > 0:
        exterior = _ring(contours[outer], exterior=True)
    else:
        exterior = _pixel_hull(mask, x0, y0)
    holes = [
        _ring(contours[i], exterior=False)
        for i in range(len(contours))
        if links[i][3] == outer and len(contours[i]) >= 3
    ]
    return exterior, holes


def _ring(contour: np.ndarray, exterior: bool) -> list[list[float]]:
    """Contour as ``[[x, y], ...]`` with pixel centres at +0.5, oriented by the signed area."""
    signed_area = cv2.contourArea(contour, oriented=True)
    if (signed_area < 0) if exterior else (signed_area > 0):
        contour = contour[::-1]
    points: list[list[float]] = (contour.reshape(-1, 2).astype(np.float64) + 0.5).tolist()
    return points


def _pixel_hull(mask: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    """Convex hull of the corners of an object's pixels (for objects without interior)."""
    rows, cols = np.nonzero(mask)
    corners = np.concatenate(
        [np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]
    ).astype(np.float32)
    hull = cv2.convexHull(corners).reshape(-1, 2).astype(np.float64)  # positive signed area
    hull += (x0, y0)
    points: list[list[float]] = hull.tolist()
    return points


_DIAMOND = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])


def _feret_min(mask: np.ndarray) -> float:
    """Minimum caliper width of a mask by rotating calipers over the convex hull of its outline.

    The outline is the 0.5 iso-contour (through the midpoints of boundary pixel edges), as for
    regionprops' ``feret_diameter_max``, but of the mask itself rather than of its pixelised
    convex hull, which adds up to a pixel of width on slanted edges.
    """
    padded = np.pad(mask, 2)
    points = np.vstack(find_contours(padded, 0.5, fully_connected="high")).astype(np.float32)
    hull = cv2.convexHull(points).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    valid = lengths > 0
    edges, starts, lengths = edges[valid], hull[valid], lengths[valid]
    rel = hull[None, :, :] - starts[:, None, :]  # (edges, points, 2)
    heights = np.abs(edges[:, None, 0] * rel[..., 1] - edges[:, None, 1] * rel[..., 0])
    return float((heights.max(axis=1) / lengths).min())


def _convex_image_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of regionprops' ``image_convex`` as (row, first column, last column): the pixel
    centres inside or on the convex hull of the pixels' edge midpoints, as scikit-image's
    ``convex_hull_image`` finds them, but computed from the hull's half-planes per row instead
    of rasterising the hull (which was most of the time of postprocessing)."""
    present = mask.any(axis=1)
    rows = np.flatnonzero(present)
    width = mask.shape[1]
    lefts = mask[present].argmax(axis=1)
    rights = width - 1 - mask[present, ::-1].argmax(axis=1)
    extremes = np.concatenate([np.stack([lefts, rows], 1), np.stack([rights, rows], 1)])
    centres = cv2.convexHull(extremes.astype(np.float32)).reshape(-1, 2)  # hull of all pixels
    points = (centres[:, None, :] + _DIAMOND[None, :, :]).reshape(-1, 2).astype(np.float32)
    hull = cv2.convexHull(points).reshape(-1, 2).astype(np.float64)
    ys = np.arange(math.ceil(hull[:, 1].min() - 1e-9), math.floor(hull[:, 1].max() + 1e-9) + 1)
    step = np.roll(hull, -1, axis=0) - hull
    starts, dx, dy = hull, step[:, 0], step[:, 1]
    slanted = dy != 0  # horizontal edges bound no row's x-interval
    starts, dx, dy = starts[slanted], dx[slanted], dy[slanted]
    bounds = starts[:, None, 0] + dx[:, None] * (ys[None, :] - starts[:, None, 1]) / dy[:, None]
    upper = dy * _orientation(hull) > 0  # which side of each edge is inside
    hi = bounds[upper].min(axis=0) if upper.any() else np.full(len(ys), np.inf)
    lo = bounds[~upper].max(axis=0) if (~upper).any() else np.full(len(ys), -np.inf)
    first, last = np.ceil(lo - 1e-9), np.floor(hi + 1e-9)
    present = last >= first
    return ys[present].astype(np.float64), first[present], last[present]


def _convex_metrics(mask: np.ndarray) -> tuple[float, float]:
    """regionprops' convex area (``area_convex``) and ``feret_diameter_max``: the largest
    distance between points of the 0.5 iso-contour of the convex image, i.e. between the edge
    midpoints of its boundary pixels (the extreme pixels of each row are enough)."""
    ys, first, last = _convex_image_rows(mask)
    area = float((last - first + 1).sum())
    ends = np.concatenate([np.stack([first, ys], axis=1), np.stack([last, ys], axis=1)])
    outline = (ends[:, None, :] + _DIAMOND[None, :, :]).reshape(-1, 2).astype(np.float32)
    hull = cv2.convexHull(outline).reshape(-1, 2).astype(np.float64)
    diffs = hull[:, None, :] - hull[None, :, :]
    return area, float(np.sqrt((diffs**2).sum(axis=-1).max()))


def _orientation(hull: np.ndarray) -> float:
    """+1 or −1: the sign of the polygon's signed area."""
    x, y = hull[:, 0], hull[:, 1]
    return 1.0 if float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0 else -1.0


def _eccentricity(m: dict[str, float]) -> float:
    """Eccentricity of the ellipse with the same second central moments (regionprops'), from
    ``cv2.moments`` of the object's mask."""
    a, b, c = m["mu20"], m["mu02"], m["mu11"]
    root = math.sqrt(max(0.0, ((a - b) / 2) ** 2 + c**2))
    major, minor = (a + b) / 2 + root, (a + b) / 2 - root
    return math.sqrt(1 - minor / major) if major > 0 else 0.0
