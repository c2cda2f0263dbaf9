"""Output encoders: segmented objects -> JSON, GeoJSON (QuPath), label PNG and COCO.

Pure functions; every coordinate follows the convention of :mod:`ml_service.imaging.postprocess`
(pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), which is also QuPath's and COCO's, so
nothing is shifted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from ml_service.errors import InvalidParameters
from ml_service.imaging.postprocess import MAX_OBJECTS, SegmentedObject

CATEGORY_ID = 1
"""COCO category id of every object."""

CATEGORY_NAME = "cell"
"""COCO category name of every object."""

QUPATH_CLASS = "Cell"
"""QuPath classification name given to every GeoJSON feature."""


def objects_to_json(objects: Sequence[SegmentedObject], width: int, height: int) -> dict[str, Any]:
    """Plain JSON-serialisable description of the objects.

    Returns:
        ``{"width", "height", "count", "objects": [{"id", "polygon", "holes", "bbox",
        "centroid", "metrics": {name: value}}]}``; polygons are open rings ``[[x, y], ...]``.
    """
    return {
        "width": int(width),
        "height": int(height),
        "count": len(objects),
        "objects": [
            {
                "id": obj.id,
                "polygon": obj.polygon,
                "holes": obj.holes,
                "bbox": obj.bbox,
                "centroid": obj.centroid,
                "metrics": obj.metrics(),
            }
            for obj in objects
        ],
    }


def _closed(ring: list[list[float]]) -> list[list[float]]:
    return [*ring, ring[0]] if ring and ring[0] != ring[-1] else list(ring)


def objects_to_geojson(
    objects: Sequence[SegmentedObject], properties: dict[str, Any] | None = None
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of Polygon features that QuPath imports as detections.

    Each feature has ``"id"`` (the object's label value as a string), a Polygon geometry whose
    rings are closed (exterior first, then holes) and ``properties``
    ``{"objectType": "detection", "classification": {"name": "Cell"}, "measurements": {...}}``.

    Args:
        objects: the objects to export.
        properties: extra properties merged into every feature's ``properties`` (shallow; a key
            given here replaces the default one, e.g. ``{"classification": {"name": "Nucleus"}}``).

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``.
    """
    features = []
    for obj in objects:
        props: dict[str, Any] = {
            "objectType": "detection",
            "classification": {"name": QUPATH_CLASS},
            "measurements": obj.metrics(),
            "label": obj.id,
        }
        props.update(properties or {})
        features.append(
            {
                "type": "Feature",
                "id": str(obj.id),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_closed(obj.polygon)] + [_closed(h) for h in obj.holes],
                },
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def label_mask_png(labels: np.ndarray) -> bytes:
    """Encode a label image as a 16-bit greyscale PNG.

    Args:
        labels: ``(H, W)`` integer array with values in ``0..65535`` (uint16 from
            :func:`~ml_service.imaging.postprocess.extract_objects`).

    Returns:
        PNG bytes; decoding them (``cv2.IMREAD_UNCHANGED``) gives back the labels as uint16.

    Raises:
        InvalidParameters: not a 2D integer array, or values outside ``0..65535``.
    """
    if labels.ndim != 2 or labels.dtype.kind not in "ui" or labels.size == 0:
        raise InvalidParameters(
            f"expected a non-empty (H, W) integer label image, got {labels.shape} {labels.dtype}"
        )
    if labels.dtype != np.uint16 and (labels.min() < 0 or labels.max() > MAX_OBJECTS):
        raise InvalidParameters(f"label values must be in 0..{MAX_OBJECTS} for a 16-bit PNG")
    ok, encoded = cv2.imencode(".png", labels.astype(np.uint16, copy=False))
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid input, excluded above
        raise InvalidParameters("OpenCV could not encode the label image as PNG")
    return encoded.tobytes()


def _rle_counts(column_major_indices: np.ndarray, n_pixels: int) -> list[int]:
    """Uncompressed COCO RLE counts (alternating 0-run, 1-run, ...) of sorted pixel indices."""
    idx = column_major_indices
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate(([0], breaks))]
    ends = idx[np.concatenate((breaks - 1, [len(idx) - 1]))] + 1
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    bounds[-1] = n_pixels
    counts: list[int] = np.diff(bounds).tolist()
    if counts[-1] == 0:  # no trailing background run: pycocotools omits it too
        counts.pop()
    return counts


def objects_to_coco(
    labels: np.ndarray,
    objects: Sequence[SegmentedObject],
    image_id: int,
    file_name: str,
    width: int,
    height: int,
    first_annotation_id: int = 1,
) -> dict[str, Any]:
    """COCO instance-segmentation dict for one image, masks as compressed RLE.

    Args:
        labels: ``(height, width)`` label image the objects were extracted from.
        objects: the objects; object ``o`` is the pixels where ``labels == o.id``.
        image_id: COCO image id.
        file_name: COCO image file name.
        width: image width.
        height: image height.
        first_annotation_id: id of the first annotation (others follow consecutively), so
            several images can be merged into one dataset with unique annotation ids.

    Returns:
        ``{"images": [...], "annotations": [...], "categories": [...]}``. Each annotation has
        ``segmentation`` ``{"size": [h, w], "counts": str}`` (pycocotools' compressed RLE),
        ``area`` (pixels), ``bbox`` ``[x, y, w, h]``, ``iscrowd`` 0 and ``category_id`` 1.

    Raises:
        InvalidParameters: ``labels`` is not ``(height, width)``.
    """
    if labels.shape != (height, width):
        raise InvalidParameters(
            f"labels have shape {labels.shape}, expected (height, width) = {(height, width)}"
        )
    # Column-major indices of labelled pixels, grouped by label (stable: increasing in a group).
    flat = labels.ravel(order="F")
    pixels = np.flatnonzero(flat)
    values = flat[pixels]
    order = np.argsort(values, kind="stable")
    pixels, values = pixels[order], values[order]
    annotations = []
    for k, obj in enumerate(objects):
        lo, hi = np.searchsorted(values, [obj.id, obj.id + 1])
        counts = _rle_counts(pixels[lo:hi], height * width) if hi > lo else [height * width]
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        x0, y0, x1, y1 = obj.bbox
        annotations.append(
            {
                "id": first_annotation_id + k,
                "image_id": image_id,
                "category_id": CATEGORY_ID,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                "area": float(hi - lo),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
            }
        )
    return {
        "images": [{"id": image_id, "file_name": file_name, "width": width, "height": height}],
        "annotations": annotations,
        "categories": [{"id": CATEGORY_ID, "name": CATEGORY_NAME, "supercategory": "cell"}],
    }
