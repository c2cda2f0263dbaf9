"""What the engine returns: the user's segmentation parameters and one image's result (labels,
objects with polygons and metrics, timings) with its encodings. ``ml_service.serving.engine``
re-exports both, so callers import them from there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_service.errors import InvalidParameters
from ml_service.imaging.formats import (
    label_mask_png,
    objects_to_coco,
    objects_to_geojson,
    objects_to_json,
)
from ml_service.imaging.postprocess import SegmentedObject

THRESHOLD_RANGE = (0.05, 0.95)
MAX_MIN_AREA = 10_000_000
DIAMETER_RANGE = (5.0, 2000.0)
"""Object diameters (pixels) a request may give; ``contracts.requests`` holds the same."""
AUTO = "auto"
"""``diameter=AUTO``: estimate the objects' diameter from a first pass."""


@dataclass(frozen=True)
class SegmentationParams:
    """User-set postprocessing: probability threshold, minimum object area in pixels, and
    whether touching objects are separated (``split``; on by default, as it measures best
    overall: docs/benchmarks.md, "Instance separation")."""

    threshold: float = 0.5
    min_area: int = 50
    split: bool = True
    diameter: float | str | None = None
    """Typical object diameter in the image, pixels: the image is rescaled so objects have the
    diameter the weights were trained for (their sidecar's ``train_diameter_px``), and results
    come back in the original frame. ``"auto"`` estimates it; None segments as the image is."""

    def validate(self) -> SegmentationParams:
        if not isinstance(self.split, bool):
            raise InvalidParameters(f"split must be true or false, got {self.split!r}")
        d = self.diameter
        if d is not None and d != AUTO:
            low_d, high_d = DIAMETER_RANGE
            number = isinstance(d, int | float) and not isinstance(d, bool)
            if not (number and low_d <= float(d) <= high_d):  # NaN fails the comparison
                raise InvalidParameters(
                    f"diameter must be 'auto' or a number of pixels from {low_d:g} to "
                    f"{high_d:g}, got {d!r}"
                )
        low, high = THRESHOLD_RANGE
        if not low <= self.threshold <= high:
            raise InvalidParameters(f"threshold must be within {low}–{high}, got {self.threshold}")
        if not 0 <= self.min_area <= MAX_MIN_AREA:
            raise InvalidParameters(
                f"min_area must be within 0–{MAX_MIN_AREA}, got {self.min_area}"
            )
        return self


@dataclass(frozen=True)
class SegmentationResult:
    """Objects found in one image, in original pixel coordinates."""

    model: str
    variant: str
    width: int
    height: int
    params: SegmentationParams
    labels: np.ndarray = field(repr=False)  # (H, W) uint16, 0 = background
    objects: list[SegmentedObject] = field(repr=False)
    timings_ms: dict[str, float]
    tiles: int
    batch_sizes: list[int]
    diameter_px: float | None = None  # the diameter the image was rescaled for (auto: found)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "threshold": self.params.threshold,
            "min_area": self.params.min_area,
            "split": self.params.split,
            "diameter": self.params.diameter,
            "diameter_px": self.diameter_px,
            "tiles": self.tiles,
            "batch_sizes": self.batch_sizes,
            "timings_ms": self.timings_ms,
            **objects_to_json(self.objects, self.width, self.height),
        }

    def to_geojson(self) -> dict[str, Any]:
        return objects_to_geojson(self.objects, {"model": self.model})

    def to_coco(self, image_id: int = 1, file_name: str = "image") -> dict[str, Any]:
        return objects_to_coco(
            self.labels, self.objects, image_id, file_name, self.width, self.height
        )

    def mask_png(self) -> bytes:
        return label_mask_png(self.labels)
