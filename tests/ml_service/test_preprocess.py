"""Preprocessing: grey conversion, normalisation, letterbox and tiling with their inverses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml_service.errors import InvalidImage, InvalidParameters
from ml_service.imaging.postprocess import extract_objects
from ml_service.imaging.preprocess import (
    NORMALIZED_RANGE,
    Letterbox,
    Restore,
    TileGrid,
    letterbox,
    normalize_percentile,
    plan_input,
    prepare,
    tile,
    to_grey_float,
    unletterbox,
    untile,
)


def _smooth(shape: tuple[int, int], seed: int = 0, sigma: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    """uint8 image, 200 inside discs centred on pixels ``(x, y)``, 20 outside."""
    image = np.full(shape, 20, np.uint8)
    for x, y in centres:
        cv2.circle(image, (x, y), radius, 200, -1)
    return image


# --- grey and normalisation --------------------------------------------------------------------


def test_grey_passes_through_as_float32() -> None:
    image = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    grey = to_grey_float(image)
    assert grey.dtype == np.float32
    np.testing.assert_array_equal(grey, image)
    np.testing.assert_array_equal(to_grey_float(image[..., None]), image)


def test_rgb_and_rgba_become_luminance_alpha_ignored() -> None:
    rgb = np.zeros((2, 3, 3), np.uint16)
    rgb[0, :, 0] = 1000  # red
    rgb[1, :, 1] = 1000  # green
    expected = np.array([[299.0] * 3, [587.0] * 3], np.float32)
    np.testing.assert_allclose(to_grey_float(rgb), expected, rtol=1e-5)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint16)], axis=2)
    np.testing.assert_allclose(to_grey_float(rgba), expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (2, 4, 4, 3)])
def test_grey_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImage):
        to_grey_float(np.zeros(shape, np.uint8))


def test_normalize_is_independent_of_bit_depth() -> None:
    image8 = (_smooth((64, 80)) * 255 / 0.7).clip(0, 255).astype(np.uint8)
    reference = normalize_percentile(image8)
    low_range = image8.astype(np.uint16) * 16  # 12-bit camera: 0..4080
    offset = 30000 + image8.astype(np.uint16) * 3  # 30000..30765
    for image16 in (low_range, offset):
        assert image16.dtype == np.uint16
        np.testing.assert_allclose(normalize_percentile(image16), reference, atol=1e-5)


def test_normalize_maps_percentiles_to_0_and_1() -> None:
    image = np.random.default_rng(0).normal(1000, 100, (100, 100)).astype(np.float32)
    out = normalize_percentile(image, 1.0, 99.0)
    assert out.dtype == np.float32
    assert abs(np.percentile(out, 1.0)) < 1e-4
    assert abs(np.percentile(out, 99.0) - 1.0) < 1e-4
    assert out.min() >= NORMALIZED_RANGE[0] and out.max() <= NORMALIZED_RANGE[1]


def test_normalize_clips_hot_pixels() -> None:
    image = np.tile(np.arange(100, dtype=np.uint16), (100, 1))
    image[0, 0] = 65535
    assert normalize_percentile(image).max() == NORMALIZED_RANGE[1]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_normalize_constant_image_is_zeros(dtype: type) -> None:
    out = normalize_percentile(np.full((10, 12), 7, dtype))
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize(("low", "high"), [(50, 50), (-1, 99), (1, 101), (99, 1)])
def test_normalize_rejects_bad_percentiles(low: float, high: float) -> None:
    with pytest.raises(InvalidParameters):
        normalize_percentile(np.zeros((4, 4)), low, high)


# --- letterbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "scaled"), [((700, 500), (256, 183)), ((500, 700), (183, 256))])
def test_letterbox_shrinks_longest_side_and_pads_right_bottom(
    shape: tuple[int, int], scaled: tuple[int, int]
) -> None:
    image = np.ones(shape, np.float32)
    boxed, lb = letterbox(image, 256)
    assert boxed.shape == (256, 256) and boxed.dtype == np.float32
    assert lb == Letterbox(shape, 256 / 700, scaled, 256)
    np.testing.assert_allclose(boxed[: scaled[0], : scaled[1]], 1.0, rtol=1e-6)
    assert not boxed[scaled[0] :, :].any() and not boxed[:, scaled[1] :].any()


def test_letterbox_never_upscales_and_roundtrips_exactly_when_it_fits() -> None:
    image = _smooth((100, 80))
    boxed, lb = letterbox(image, 256)
    assert lb.scale == 1.0 and lb.scaled_shape == (100, 80)
    np.testing.assert_array_equal(boxed[:100, :80], image)
    np.testing.assert_array_equal(unletterbox(boxed, lb), image)


def test_letterbox_roundtrip_of_smooth_image() -> None:
    image = _smooth((700, 500), sigma=12)
    image = (image - image.min()) / (image.max() - image.min())
    boxed, lb = letterbox(image, 256)
    restored = unletterbox(boxed, lb)
    assert restored.shape == image.shape
    assert np.abs(restored - image)[5:-5, 5:-5].max() < 0.05


def test_unletterbox_rejects_wrong_shape() -> None:
    _, lb = letterbox(np.zeros((50, 60), np.float32), 64)
    with pytest.raises(ValueError):
        unletterbox(np.zeros((32, 32), np.float32), lb)


@pytest.mark.parametrize("shape", [(700, 500), (500, 700)])
def test_disc_centroid_back_in_original_frame_after_letterbox(shape: tuple[int, int]) -> None:
    centre = (shape[1] // 3, shape[0] // 2)  # (x, y) pixel indices
    image = _discs(shape, [centre], 40)
    batch, restore = prepare(image, size=256, overlap=32, tile_factor=3.0)
    assert batch.shape == (1, 256, 256) and restore.plan == "letterbox"
    prob = restore.restore(batch)  # identity "model": the normalised input is the probability
    assert prob.shape == shape
    _, objects = extract_objects(prob, 0.5, min_area=10)
    assert len(objects) == 1
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5) in output coordinates.
    np.testing.assert_allclose(objects[0].centroid, [centre[0] + 0.5, centre[1] + 0.5], atol=1.5)
    assert abs(objects[0].area - np.pi * 40**2) / (np.pi * 40**2) < 0.03


# --- tiling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "overlap"),
    [
        ((1, 1), 64, 16),
        ((1, 300), 64, 16),
        ((300, 1), 64, 0),
        ((64, 64), 64, 16),
        ((65, 129), 64, 16),
        ((70, 90), 64, 63),
        ((37, 500), 64, 20),
        ((1500, 1100), 256, 64),
    ],
)
def test_untile_inverts_tile_exactly(shape: tuple[int, int], size: int, overlap: int) -> None:
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    tiles, grid = tile(image, size, overlap)
    assert tiles.shape == (grid.n_tiles, size, size) and tiles.dtype == np.float32
    np.testing.assert_array_equal(untile(tiles, grid), image)


def test_untile_roundtrip_random_shapes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        shape = (int(rng.integers(1, 400)), int(rng.integers(1, 400)))
        size = int(rng.integers(8, 96))
        overlap = int(rng.integers(0, size))
        image = rng.random(shape).astype(np.float32)
        tiles, grid = tile(image, size, overlap)
        np.testing.assert_array_equal(untile(tiles, grid), image)


def test_tiles_cover_image_and_pad_with_zero() -> None:
    image = np.ones((100, 40), np.float32)
    tiles, grid = tile(image, 64, 16)
    assert grid.xs == (0,) and grid.ys == (0, 36)  # last row of tiles ends at the border
    assert grid.origins == [(0, 0), (36, 0)]
    assert not tiles[:, :, 40:].any()
    np.testing.assert_array_equal(tiles[:, :, :40], 1.0)


def test_each_pixel_comes_from_one_tile_away_from_inner_tile_edges() -> None:
    shape, size, overlap = (500, 420), 128, 40
    tiles, grid = tile(np.zeros(shape, np.float32), size, overlap)
    # Tile i reports, per pixel, its own index + distance to its nearest edge / 1000.
    yy, xx = np.mgrid[:size, :size]
    edge_distance = np.minimum.reduce([yy, xx, size - 1 - yy, size - 1 - xx]).astype(np.float32)
    outputs = np.stack([i + edge_distance / 1000 for i in range(grid.n_tiles)]).astype(np.float32)
    stitched = untile(outputs, grid)
    owner = np.floor(stitched + 1e-4).astype(int)
    distance = np.round((stitched - owner) * 1000)
    assert set(np.unique(owner)) == set(range(grid.n_tiles))
    # Away from the image border, every pixel is at least overlap/2 - 1 from its tile's edge.
    half = overlap // 2
    assert distance[half:-half, half:-half].min() >= half - 1


def test_tile_parameter_validation() -> None:
    image = np.zeros((10, 10), np.float32)
    for size, overlap in ((0, 0), (16, 16), (16, -1)):
        with pytest.raises(InvalidParameters):
            tile(image, size, overlap)
    with pytest.raises(InvalidImage):
        tile(np.zeros((3, 4, 5), np.float32), 16, 4)


def test_untile_rejects_wrong_tile_count() -> None:
    tiles, grid = tile(np.zeros((300, 300), np.float32), 128, 32)
    with pytest.raises(ValueError):
        untile(tiles[1:], grid)


def test_plan_input() -> None:
    assert plan_input((384, 100), 256) == "letterbox"
    assert plan_input((385, 100), 256) == "tile"
    assert plan_input((100, 600), 256, tile_factor=3.0) == "letterbox"


def test_prepare_tiles_large_image_and_finds_each_disc_once() -> None:
    shape, size, overlap, radius = (1500, 1100), 256, 64, 20
    # Tile origins are every 192 px; place discs across tile edges, across the middle of
    # overlaps (where ownership switches) and at tile corners.
    centres = [
        (256, 100),
        (224, 400),
        (100, 448),
        (416, 416),
        (640, 600),
        (832, 1216),
        (1000, 1400),
        (448, 1344),
        (700, 900),
        (550, 256),
    ]
    image = _discs(shape, centres, radius)
    batch, restore = prepare(image, size, overlap)
    assert restore.plan == "tile" and isinstance(restore.transform, TileGrid)
    assert batch.shape == (restore.n_inputs, size, size)

    def model(inputs: np.ndarray) -> np.ndarray:
        """Identity, except outputs are garbage within 16 px of every tile edge."""
        out = inputs.copy()
        out[:, :16], out[:, -16:], out[:, :, :16], out[:, :, -16:] = 0.9, 0.9, 0.9, 0.9
        return out

    prob = restore.restore(model(batch))
    assert prob.shape == shape
    # Garbage can only survive where there is no neighbouring tile: the image border.
    interior = prob[16:-16, 16:-16]
    np.testing.assert_array_equal(interior, restore.restore(batch)[16:-16, 16:-16])
    prob[:16], prob[-16:], prob[:, :16], prob[:, -16:] = 0, 0, 0, 0
    _, objects = extract_objects(prob, 0.5, min_area=50)
    assert len(objects) == len(centres)
    found = sorted((round(o.centroid[0] - 0.5), round(o.centroid[1] - 0.5)) for o in objects)
    assert found == sorted(centres)
    for obj in objects:
        assert abs(obj.area - np.pi * radius**2) / (np.pi * radius**2) < 0.05


def test_restore_rejects_wrong_output_shape() -> None:
    batch, restore = prepare(np.zeros((100, 100), np.uint8), 128, 16)
    assert isinstance(restore, Restore) and restore.n_inputs == 1
    with pytest.raises(ValueError):
        restore.restore(np.zeros((2, 128, 128), np.float32))
