"""Training targets and the instance metric: separated foreground, diameters, AP at IoU 0.5."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml_service.training.evaluation import average_precision, instances_from_mask
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


def test_average_precision_counts_matches_misses_and_merges() -> None:
    truth = _two_touching_squares()
    assert average_precision(truth, truth) == 1.0
    merged = instances_from_mask(truth > 0)  # the squares merge: IoU 0.5 is not a match
    assert average_precision(merged, truth) == pytest.approx(1 / 4)
    assert average_precision(instances_from_mask(separated_foreground(truth)), truth) == 1.0
    assert average_precision(np.zeros_like(truth), truth) == 0.0
    assert average_precision(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        average_precision(truth[:5], truth)
