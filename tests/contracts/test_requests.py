"""The request contract is defined once (``contracts.requests``) and matches what the engine,
the model registry and the workers' task actually accept."""

from __future__ import annotations

import pytest

from contracts import requests
from ml_service.errors import InvalidParameters
from ml_service.results import (
    AUTO,
    DIAMETER_RANGE,
    MAX_MIN_AREA,
    THRESHOLD_RANGE,
    SegmentationParams,
)
from models.registry import MODEL_NAMES


def test_model_names_are_the_registry_models() -> None:
    assert requests.MODEL_NAMES == MODEL_NAMES


def test_limits_are_the_engine_limits() -> None:
    assert (requests.MIN_THRESHOLD, requests.MAX_THRESHOLD) == THRESHOLD_RANGE
    assert requests.MAX_MIN_AREA == MAX_MIN_AREA
    assert (requests.MIN_DIAMETER, requests.MAX_DIAMETER) == DIAMETER_RANGE
    assert requests.DIAMETER_AUTO == AUTO
    defaults = SegmentationParams()
    assert (defaults.threshold, defaults.min_area, defaults.split, defaults.diameter) == (
        requests.DEFAULT_THRESHOLD,
        requests.DEFAULT_MIN_AREA,
        requests.DEFAULT_SPLIT,
        None,
    )


def test_the_diameter_limits_are_the_engine_limits() -> None:
    for ok in (requests.MIN_DIAMETER, requests.MAX_DIAMETER, requests.DIAMETER_AUTO):
        SegmentationParams(diameter=ok).validate()
    for bad in (requests.MIN_DIAMETER - 0.01, requests.MAX_DIAMETER + 1, float("nan"), "big"):
        with pytest.raises(InvalidParameters, match="diameter"):
            SegmentationParams(diameter=bad).validate()


def test_the_largest_accepted_min_area_is_accepted_by_the_engine() -> None:
    SegmentationParams(min_area=requests.MAX_MIN_AREA).validate()
    with pytest.raises(InvalidParameters):
        SegmentationParams(min_area=requests.MAX_MIN_AREA + 1).validate()


def test_the_task_name_is_the_workers_task() -> None:
    from workers.tasks import segment_image

    assert segment_image.name == requests.TASK_SEGMENT
