"""The acceptance check's drawn shapes and its per-object IoU (pure parts; the engine runs in
``python -m ml_service.training.acceptance``)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ml_service.training.acceptance import drawn_shapes, object_iou


def test_drawn_shapes_cover_radius_10_to_150_with_holes_in_annuli() -> None:
    shapes = {s.name: s for s in drawn_shapes()}
    assert {"disc r10", "disc r150", "annulus 120/70"} <= set(shapes)
    big = shapes["disc r150"].truth
    assert big.shape == (390, 390)  # above 384 px: the engine tiles it
    assert abs(big.sum() - np.pi * 150**2) < 0.02 * np.pi * 150**2
    ring = shapes["annulus 120/70"].truth
    assert ndi.binary_fill_holes(ring).sum() > ring.sum()  # the hole is background
    for s in shapes.values():
        assert s.image.dtype == np.uint8 and s.image.shape == s.truth.shape
        assert s.image[s.truth].mean() > s.image[~s.truth].mean() + 100


def test_object_iou_takes_the_object_overlapping_most() -> None:
    truth = np.zeros((20, 20), bool)
    truth[2:12, 2:12] = True
    labels = np.zeros((20, 20), np.uint16)
    labels[2:12, 2:6] = 1  # 40 px of the object
    labels[2:12, 6:12] = 2  # 60 px: the one taken
    assert object_iou(labels, truth) == 0.6
    assert object_iou(np.zeros_like(labels), truth) == 0.0
    assert object_iou(truth.astype(np.uint16) * 3, truth) == 1.0
