"""``diameter``: the training diameter of a loaded model and the estimate of ``"auto"``.

``diameter="auto"`` runs the image once as it is, takes the median equivalent diameter of the
objects found (:func:`estimate_diameter`) and, unless that is within :data:`AUTO_TOLERANCE` of
the model's training diameter (then the first pass is the answer), runs it again rescaled for
that diameter. How well it finds known sizes: docs/benchmarks.md, "How well `diameter=auto`
finds the size".
"""

from __future__ import annotations

from collections.abc import Sequence

from ml_service.imaging.postprocess import SegmentedObject
from ml_service.imaging.rescale import median_diameter
from ml_service.results import DIAMETER_RANGE
from ml_service.serving.pool import LoadedModel

AUTO_TOLERANCE = 0.1
"""A first pass whose objects are within this fraction of the training diameter is kept."""


def train_diameter(model: LoadedModel) -> float | None:
    """The median object diameter (px) the model's weights were trained on, from their sidecar
    (``train_diameter_px``); None when the sidecar does not record it."""
    value = model.weights.get("train_diameter_px")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def estimate_diameter(
    objects: Sequence[SegmentedObject], trained: float, shape: tuple[int, int]
) -> float:
    """The diameter to run ``"auto"``'s second pass for: the median equivalent diameter of a
    first pass's objects, held within ``DIAMETER_RANGE`` and the image's longer side; exactly
    ``trained`` when there is no object or the median is within :data:`AUTO_TOLERANCE` of it
    (no second pass)."""
    found = median_diameter([o.equivalent_diameter for o in objects])
    if found is None or abs(found - trained) <= AUTO_TOLERANCE * trained:
        return trained
    low, high = DIAMETER_RANGE
    return min(max(found, low), high, float(max(shape)))
