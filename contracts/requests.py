"""What a segmentation request may ask for, shared by the gateway (which refuses the rest with a
422 before anything is stored) and the workers: model names, parameter ranges, the task name.

The engine checks the same ranges itself (``ml_service.results.SegmentationParams``); a test
holds the two to the same numbers, since the engine may not import this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODEL_NAMES: tuple[str, ...] = ("cbam_resunet", "hrnet", "unet")
"""Models a job may name (``models.registry`` defines them; a test keeps the two equal)."""

DEFAULT_THRESHOLD = 0.5
MIN_THRESHOLD = 0.05
MAX_THRESHOLD = 0.95
DEFAULT_MIN_AREA = 50
MAX_MIN_AREA = 10_000_000
DEFAULT_SPLIT = True
"""Touching objects are separated unless a request says ``split=false``."""
MIN_DIAMETER = 5.0
MAX_DIAMETER = 2000.0
"""Range of ``diameter`` (pixels; or ``"auto"``); it may not exceed the image's longer side."""
DIAMETER_AUTO = "auto"


def diameter_columns(diameter: float | str | None) -> tuple[float | None, bool]:
    """A request's ``diameter`` (pixels, ``"auto"`` or None) as the job row's
    ``(diameter, diameter_auto)`` columns."""
    if diameter == DIAMETER_AUTO:
        return None, True
    return (None if diameter is None else float(diameter)), False


def diameter_of(row: Mapping[str, Any]) -> float | str | None:
    """The ``diameter`` of a job row: its number, ``"auto"``, or None."""
    if row["diameter_auto"]:
        return DIAMETER_AUTO
    value = row["diameter"]
    return None if value is None else float(value)


MAX_PLANE_INDEX = 100_000
"""Largest ``plane`` or ``channel`` index a request may name (the file says what it holds)."""

TASK_SEGMENT = "workers.tasks.segment_image"
"""The Celery task the dispatcher sends and the workers run, one image id per message."""
