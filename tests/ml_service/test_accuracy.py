"""The accuracy benchmark's scoring helpers on label images whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from ml_service.tools.accuracy import Score, coin_check, synthetic_sets


def test_score_averages_per_image() -> None:
    truth = np.zeros((20, 20), np.int32)
    truth[0:10, 0:10], truth[10:20, 10:20] = 1, 2
    merged = (truth > 0).astype(np.int32)  # two objects as one: AP 0 at 0.75
    score = Score.of([(truth, truth), (truth, merged)])
    assert score.ap50 == pytest.approx((1 + 1 / 2) / 2)
    assert score.ap75 == pytest.approx(0.5)


def test_coin_check_counts_objects_made_of_background() -> None:
    image = np.zeros((20, 20), np.uint8)
    image[2:8, 2:8] = 200  # a coin
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[12:18, 12:18] = 2  # an object on the dark background
    assert coin_check(image, labels) == (2, 1)


def test_synthetic_sets_hold_images_and_their_truth() -> None:
    sets = synthetic_sets(1)
    assert set(sets) == {"touching", "spheroids", "rings", "mixed sizes"}
    for [(image, truth)] in sets.values():
        assert image.shape == truth.shape
        assert truth.max() >= 1
