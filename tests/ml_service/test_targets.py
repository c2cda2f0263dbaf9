"""Training targets: the foreground with gaps between touching objects, object diameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml_service.imaging.matching import average_precision
from ml_service.training.targets import equivalent_diameters, separated_foreground


def _two_touching_squares() -> np.ndarray:
    labels = np.zeros((12, 12), np.int32)
    labels[2:6, 2:6] = 1
    labels[2:6, 6:10] = 2
    labels[8:11, 8:11] = 3
    return labels


def test_separated_foreground_splits_touching_objects_and_keeps_isolated_ones() -> None:
    labels = _two_touching_squares()
    target = separated_foreground(labels)
    assert int(ndi.label(target, structure=np.ones((3, 3)))[1]) == 3
    np.testing.assert_array_equal(target[8:11, 8:11], 1)  # isolated: every pixel kept
    assert target[2:6, 5].sum() == 0 and target[2:6, 6].sum() == 0  # two-pixel gap
    assert target.dtype == np.uint8


def test_equivalent_diameters() -> None:
    labels = np.zeros((50, 50), np.int32)
    yy, xx = np.ogrid[:50, :50]
    labels[(yy - 25) ** 2 + (xx - 25) ** 2 <= 100] = 4
    (d,) = equivalent_diameters(labels)
    assert d == pytest.approx(20.0, abs=0.5)


def test_touching_objects_are_one_component_until_the_gap_separates_them() -> None:
    truth = _two_touching_squares()
    assert int(ndi.label(truth > 0, structure=np.ones((3, 3)))[1]) == 2
    gapped = separated_foreground(truth)
    assert average_precision(truth, ndi.label(gapped, structure=np.ones((3, 3)))[0]) == 1.0
