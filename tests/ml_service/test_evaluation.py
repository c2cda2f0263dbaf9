"""Tests of the metrics, the classical reference segmentation and the bundled real images."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from skimage.draw import disk

from ml_service.training.evaluation import (
    classical_labels,
    classical_segmentation,
    dice,
    iou,
    real_sample_images,
)


def _square(top: int, left: int, side: int = 10, shape: tuple[int, int] = (30, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _render(truth: np.ndarray, seed: int = 0, bright: bool = True) -> np.ndarray:
    """``(H, W)`` uint8 image of a bool mask: objects 170 on 40 (or inverted), blur, noise."""
    rng = np.random.default_rng(seed)
    image = np.where(truth, 170.0, 40.0)
    if not bright:
        image = 210.0 - image
    image = image + rng.normal(0.0, 12.0, truth.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _discs(centers: list[tuple[int, int]], radius: int, shape: tuple[int, int]) -> np.ndarray:
    truth = np.zeros(shape, bool)
    for c in centers:
        truth[disk(c, radius, shape=shape)] = True
    return truth


FIVE_DISCS = _discs([(30, 30), (30, 100), (64, 64), (100, 30), (100, 100)], 14, (128, 128))


def test_iou_and_dice_of_overlapping_squares() -> None:
    a, b = _square(0, 0), _square(5, 0)  # 100 px each, 50 px shared
    assert iou(a, b) == pytest.approx(50 / 150)
    assert dice(a, b) == pytest.approx(2 * 50 / 200)


def test_identical_disjoint_and_empty_masks() -> None:
    a, empty = _square(0, 0), np.zeros((30, 30), bool)
    assert iou(a, a) == dice(a, a) == 1.0
    assert iou(a, _square(15, 15)) == dice(a, _square(15, 15)) == 0.0
    assert iou(a, empty) == dice(a, empty) == 0.0
    assert iou(empty, empty) == dice(empty, empty) == 1.0


def test_metrics_accept_numeric_masks_and_relate() -> None:
    rng = np.random.default_rng(0)
    p, t = rng.random((40, 40)) > 0.5, rng.random((40, 40)) > 0.3
    assert iou(p.astype(np.float32), t.astype(np.uint8)) == iou(p, t)
    j = iou(p, t)
    assert dice(p, t) == pytest.approx(2 * j / (1 + j))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((3, 3)), np.zeros((3, 4)))


@pytest.mark.parametrize("bright", [True, False])
def test_five_separate_discs_are_found(bright: bool) -> None:
    image = _render(FIVE_DISCS, bright=bright)
    assert int(classical_labels(image).max()) == 5
    assert iou(classical_segmentation(image), FIVE_DISCS) > 0.9


def test_explicit_polarity_and_colour_input() -> None:
    image = _render(FIVE_DISCS)
    assert iou(classical_segmentation(image, "bright"), FIVE_DISCS) > 0.9
    rgb = np.repeat(image[..., None], 3, axis=2)
    assert iou(classical_segmentation(rgb), FIVE_DISCS) > 0.9
    with pytest.raises(ValueError, match="polarity"):
        classical_segmentation(image, "up")


def test_touching_discs_are_split_by_the_watershed() -> None:
    left = _discs([(50, 34)], 16, (100, 100))
    right = _discs([(50, 66)], 16, (100, 100))
    labels = classical_labels(_render(left | right, seed=1))
    assert labels.dtype == np.int32
    assert int(labels.max()) == 2
    for truth in (left, right):
        ids, counts = np.unique(labels[truth], return_counts=True)
        assert ids[np.argmax(counts)] != 0
        assert iou(labels == ids[np.argmax(counts)], truth) > 0.8


def test_large_hole_of_a_ring_is_kept() -> None:
    ring = _discs([(50, 50)], 30, (100, 100)) & ~_discs([(50, 50)], 15, (100, 100))
    mask = classical_segmentation(_render(ring))
    assert not mask[50, 50]
    assert iou(mask, ring) > 0.85


def test_blank_image_has_no_objects() -> None:
    assert classical_labels(np.full((20, 20), 7, np.uint16)).max() == 0


def test_real_sample_images_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    images = real_sample_images()
    assert images
    for name, image in images.items():
        assert image.ndim == 2, name
        assert min(image.shape) >= 100, name
        assert np.isfinite(image).all() and np.ptp(image) > 0, name
    # the bundled phase image shows exactly one cell
    assert int(classical_labels(images["cell"]).max()) == 1
