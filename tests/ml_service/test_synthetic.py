"""Tests of the procedural microscopy generator: determinism, variety, ground-truth sanity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml_service.imaging.preprocess import normalize_percentile
from ml_service.training.synthetic import KINDS, POLARITIES, Sample, generate_sample, make_dataset
from ml_service.training.targets import separated_foreground

SIZE = 128


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """80 samples of random kind from one seed (under a second)."""
    rng = np.random.default_rng(2024)
    return [generate_sample(rng, SIZE) for _ in range(60)]


def _has_hole(mask: np.ndarray) -> bool:
    return bool(np.any(ndi.binary_fill_holes(mask) != mask))


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.kind == b.kind
        and a.polarity == b.polarity
        and a.image.dtype == b.image.dtype
        and np.array_equal(a.image, b.image)
        and np.array_equal(a.labels, b.labels)
    )


def test_same_seed_gives_same_samples() -> None:
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(4):
        assert _same(generate_sample(rng_a, SIZE), generate_sample(rng_b, SIZE))


def test_different_seeds_give_different_samples() -> None:
    a = generate_sample(np.random.default_rng(1), SIZE, "cells")
    b = generate_sample(np.random.default_rng(2), SIZE, "cells")
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtypes_and_ground_truth(kind: str) -> None:
    rng = np.random.default_rng(3)
    for size in (64, 200):
        s = generate_sample(rng, size, kind)
        assert s.kind == kind
        assert s.polarity in POLARITIES
        assert s.image.shape == s.mask.shape == s.labels.shape == (size, size)
        assert s.image.dtype in (np.uint8, np.uint16)
        assert s.mask.dtype == np.bool_
        assert s.labels.dtype == np.int32
        np.testing.assert_array_equal(s.mask, s.labels > 0)
        n = int(s.labels.max())
        assert n >= 1
        np.testing.assert_array_equal(np.unique(s.labels), np.arange(n + 1))  # sequential
        assert 0.01 < s.mask.mean() < 0.9


def test_every_kind_and_every_polarity_occur(samples: list[Sample]) -> None:
    assert {s.kind for s in samples} == set(KINDS)
    assert {s.polarity for s in samples} == set(POLARITIES)
    brightfield = sum(s.polarity == "brightfield" for s in samples) / len(samples)
    assert 0.1 < brightfield < 0.5


def test_both_bit_depths_occur_with_varied_16_bit_ranges(samples: list[Sample]) -> None:
    wide = [s.image for s in samples if s.image.dtype == np.uint16]
    narrow = [s.image for s in samples if s.image.dtype == np.uint8]
    assert wide and narrow
    assert all(int(im.max()) > 255 for im in wide)  # 16-bit data really uses the range
    assert len({int(im.max()) // 2000 for im in wide}) >= 4  # sub-ranges differ
    assert any(int(im.min()) > 200 for im in wide)  # a camera offset above zero


@pytest.mark.parametrize(("kind", "minimum"), [("spheroids", 6), ("rings", 10)])
def test_objects_with_holes_occur(kind: str, minimum: int) -> None:
    rng = np.random.default_rng(11)
    masks = [generate_sample(rng, 256, kind).mask for _ in range(12)]
    assert sum(_has_hole(m) for m in masks) >= minimum


def test_cells_touch_or_overlap_sometimes() -> None:
    rng = np.random.default_rng(5)
    merged = 0
    for _ in range(10):
        s = generate_sample(rng, 256, "cells")
        n_components = int(ndi.label(s.mask)[1])
        merged += n_components < int(s.labels.max())
    assert merged >= 5


def test_objects_stand_out_from_their_surroundings(samples: list[Sample]) -> None:
    """Robust contrast-to-noise of objects against a band of background around them."""
    cnr = []
    for s in samples:
        image = s.image.astype(np.float64)
        near = ndi.binary_dilation(s.mask, iterations=2)
        band = ndi.binary_dilation(s.mask, iterations=6) & ~near
        core = ndi.binary_erosion(s.mask, iterations=2)
        core = core if core.any() else s.mask
        background = image[band]
        noise = 1.4826 * np.median(np.abs(background - np.median(background)))
        sign = 1.0 if s.polarity == "fluorescence" else -1.0  # brightfield, phase: dark objects
        cnr.append(sign * (np.median(image[core]) - np.median(background)) / max(noise, 1e-9))
    assert min(cnr) > 0.5  # right polarity, visible in every sample
    assert np.median(cnr) > 3.0
    assert max(cnr) > 5 * min(cnr)  # varied


def test_invalid_arguments_raise() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="valid kinds"):
        generate_sample(rng, SIZE, "nuclei")
    with pytest.raises(ValueError, match="size"):
        generate_sample(rng, 16)


def test_make_dataset_shapes_values_and_determinism() -> None:
    images, masks = make_dataset(seed=9, n=3, size=64)
    assert images.shape == masks.shape == (3, 64, 64)
    assert images.dtype == masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert np.isfinite(images).all()
    again, _ = make_dataset(seed=9, n=3, size=64)
    np.testing.assert_array_equal(images, again)
    first = generate_sample(np.random.default_rng(9), 64)
    np.testing.assert_allclose(images[0], normalize_percentile(first.image))
    np.testing.assert_array_equal(masks[0], separated_foreground(first.labels).astype(np.float32))
