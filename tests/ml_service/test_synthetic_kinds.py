"""The generator's scene kinds for labs' images: dense touching clusters, mitotic figures, very
large objects, phase contrast halos, out-of-focus objects; their labels are exact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml_service.training.synthetic import generate_sample
from ml_service.training.synthetic.cells import draw_cell, draw_mitotic
from ml_service.training.synthetic.scene import Scene
from ml_service.training.synthetic.spheroids import LARGE_MAX_RADIUS, draw_large
from ml_service.training.targets import equivalent_diameters, separated_foreground


def _touching_labels(labels: np.ndarray) -> int:
    """How many labels have an 8-neighbour pixel of another label."""
    lab = labels.astype(np.int64)
    high = ndi.maximum_filter(lab, size=3, mode="constant")
    low = ndi.minimum_filter(np.where(lab > 0, lab, lab.max() + 1), size=3, mode="nearest")
    touching = (lab > 0) & ((high != lab) | (low != lab))
    return len(np.unique(lab[touching]))


def test_clusters_are_dense_groups_of_touching_nuclei() -> None:
    rng = np.random.default_rng(4)
    for _ in range(6):
        s = generate_sample(rng, 256, "clusters")
        n = int(s.labels.max())
        assert n >= 12
        assert _touching_labels(s.labels) >= n // 3
        assert int(ndi.label(s.mask)[1]) < n  # touching nuclei merge in the plain foreground


def test_cluster_labels_are_exact_instances() -> None:
    """Each instance is one connected region whose drawn size is plausible for a nucleus, and
    the training target separates every instance from its neighbours."""
    rng = np.random.default_rng(8)
    for _ in range(6):
        s = generate_sample(rng, 256, "clusters")
        n = int(s.labels.max())
        np.testing.assert_array_equal(np.unique(s.labels), np.arange(n + 1))
        target = separated_foreground(s.labels)
        components = int(ndi.label(target, structure=np.ones((3, 3)))[1])
        assert components >= n - 1  # a nucleus almost buried by neighbours may vanish from it
        diameters = equivalent_diameters(s.labels)
        assert np.median(diameters) > 8 and diameters.max() < 40


def test_mitotic_figure_is_small_bright_and_labelled_exactly() -> None:
    scene = Scene.empty(64)
    draw_mitotic(np.random.default_rng(0), scene, (32.0, 32.0))
    region = scene.labels == 1
    assert 8 <= int(region.sum()) <= np.pi * 6.5**2
    np.testing.assert_array_equal(region, scene.signal > 0)  # signal exactly where labelled
    assert scene.signal[region].min() >= 1.6  # brighter than any ordinary nucleus (<= 1.6)


def test_cell_label_is_the_drawn_ellipse() -> None:
    scene = Scene.empty(96)
    draw_cell(np.random.default_rng(1), scene, (48.0, 48.0), 20.0, aspect=(1.0, 1.0))
    area = int((scene.labels == 1).sum())
    assert abs(area - np.pi * 20.5**2) < 0.03 * np.pi * 20**2  # OpenCV fills to r + 0.5
    assert scene.labels.max() == 1


@pytest.mark.parametrize("seed", range(4))
def test_large_objects_reach_the_largest_radius_and_the_border(seed: int) -> None:
    scene = Scene.empty(256)
    draw_large(np.random.default_rng(seed), scene)
    assert scene.radii and max(scene.radii) <= LARGE_MAX_RADIUS
    labels = scene.relabelled()
    biggest = equivalent_diameters(labels).max()
    assert biggest >= 2 * 0.55 * 0.6 * min(LARGE_MAX_RADIUS, 0.6 * 256) * 0.5


def test_large_objects_cover_whole_crops_and_touch_the_border() -> None:
    rng = np.random.default_rng(12)
    samples = [generate_sample(rng, 256, "large") for _ in range(12)]
    on_border = sum(
        bool(s.mask[0].any() or s.mask[-1].any() or s.mask[:, 0].any() or s.mask[:, -1].any())
        for s in samples
    )
    assert on_border >= 4
    # some 96-px window lies wholly inside one object: a crop can see only an object's inside
    inside = [ndi.binary_erosion(s.mask, iterations=48).any() for s in samples]
    assert sum(inside) >= 3
    assert max(np.sqrt(s.mask.sum() / np.pi) for s in samples) > 100


def test_phase_contrast_objects_are_dark_with_a_bright_halo() -> None:
    rng = np.random.default_rng(21)
    found = 0
    while found < 3:
        s = generate_sample(rng, 256, "cells")
        if s.polarity != "phase":
            continue
        found += 1
        image = s.image.astype(np.float64)
        halo = ndi.binary_dilation(s.mask, iterations=2) & ~s.mask
        far = ~ndi.binary_dilation(s.mask, iterations=12)
        assert np.median(image[halo]) > np.median(image[far])
        assert np.median(image[ndi.binary_erosion(s.mask, iterations=2)]) < np.median(image[far])


def test_out_of_focus_objects_are_blurred_but_labelled() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        scene = Scene.empty(128)
        draw_cell(rng, scene, (64.0, 64.0), 15.0)
        if scene.defocused.any():
            np.testing.assert_array_equal(scene.signal, 0)
            assert (scene.labels == 1).sum() > 0.5 * np.pi * 15**2 * 0.65
            return
    pytest.fail("no out-of-focus cell in 40 draws")
