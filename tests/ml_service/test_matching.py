"""Instance matching and average precision on label images whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from ml_service.imaging.matching import average_precision, iou_matrix, match_instances


def _squares(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for i, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = i
    return labels


def test_identical_labels_score_one_whatever_the_label_values() -> None:
    truth = _squares((50, 50), [(0, 10, 0, 10), (20, 30, 20, 30)])
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    m = match_instances(truth, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.ap == 1.0 and m.mean_matched_iou == 1.0


def test_iou_matrix_values() -> None:
    truth = _squares((20, 20), [(0, 10, 0, 10)])
    pred = _squares((20, 20), [(0, 10, 5, 15)])  # overlap 50 px, union 150 px
    assert iou_matrix(truth, pred) == pytest.approx(np.array([[50 / 150]]))


def test_merged_prediction_is_one_miss_and_one_false_positive_pair() -> None:
    truth = _squares((40, 40), [(0, 10, 0, 10), (0, 10, 10, 20)])
    pred = (truth > 0).astype(np.int32)  # the two squares merged into one object: IoU 0.5
    m = match_instances(truth, pred, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)  # at 0.5 the merged object still matches one
    m = match_instances(truth, pred, 0.75)
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    assert m.ap == 0.0


def test_ap_counts_false_positives_and_negatives() -> None:
    truth = _squares((60, 60), [(0, 10, 0, 10), (20, 30, 20, 30), (40, 50, 40, 50)])
    pred = _squares((60, 60), [(0, 10, 0, 10), (20, 30, 22, 32), (50, 60, 0, 10)])
    # square 2 shifted by 2 px: IoU 80/120 = 0.667 (a match at 0.5, not at 0.75)
    assert average_precision(truth, pred, 0.5) == pytest.approx(2 / 4)
    assert average_precision(truth, pred, 0.75) == pytest.approx(1 / 5)
    assert match_instances(truth, pred, 0.5).mean_matched_iou == pytest.approx((1 + 80 / 120) / 2)


def test_matching_is_one_to_one() -> None:
    truth = _squares((20, 40), [(0, 10, 0, 20)])
    pred = _squares((20, 40), [(0, 10, 0, 11), (0, 10, 11, 20)])  # two halves
    m = match_instances(truth, pred, 0.5)
    assert m.tp == 1 and m.fp == 1 and m.fn == 0


def test_empty_images() -> None:
    empty = np.zeros((10, 10), np.int32)
    assert average_precision(empty, empty) == 1.0
    one = _squares((10, 10), [(0, 5, 0, 5)])
    assert average_precision(one, empty) == 0.0
    assert average_precision(empty, one) == 0.0
    assert average_precision(one, one) == 1.0  # no background pixel is needed either
    full = np.ones((10, 10), np.int32)
    assert average_precision(full, full) == 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        iou_matrix(np.zeros((3, 3), np.int32), np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError):
        iou_matrix(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        match_instances(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.int32), 0.0)
