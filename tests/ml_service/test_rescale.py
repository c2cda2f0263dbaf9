"""Object-size rescaling: image resize, map resize back, the diameter estimate."""

from __future__ import annotations

import numpy as np
import pytest

from ml_service.errors import InvalidParameters
from ml_service.imaging.rescale import median_diameter, rescale_image, resize_map, scaled_shape


def test_rescale_keeps_dtype_and_channels_and_resize_map_inverts_the_shape() -> None:
    grey = np.zeros((100, 80), np.uint16)
    rgb = np.zeros((100, 80, 3), np.uint8)
    one = np.zeros((100, 80, 1), np.float64)
    assert rescale_image(grey, 0.5, 10**6).shape == (50, 40)
    assert rescale_image(grey, 0.5, 10**6).dtype == np.uint16
    assert rescale_image(rgb, 2.0, 10**6).shape == (200, 160, 3)
    assert rescale_image(one, 1.5, 10**6).shape == (150, 120, 1)
    assert rescale_image(grey, 1.0, 10) is grey
    prob = np.zeros(scaled_shape((100, 80), 0.37), np.float32)
    assert resize_map(prob, (100, 80)).shape == (100, 80)


def test_rescale_refuses_to_exceed_the_pixel_limit() -> None:
    with pytest.raises(InvalidParameters, match="diameter"):
        rescale_image(np.zeros((100, 100), np.uint8), 3.0, 50_000)


def test_median_diameter() -> None:
    assert median_diameter([10.0, 30.0, 20.0]) == 20.0
    assert median_diameter([]) is None
