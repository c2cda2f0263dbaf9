"""Postprocessing: thresholding, connected components, outlines and metrics on drawn shapes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.draw import disk, ellipse

from ml_service.errors import InvalidImage, InvalidParameters
from ml_service.imaging import postprocess
from ml_service.imaging.postprocess import (
    MAX_OBJECTS,
    METRIC_NAMES,
    SegmentedObject,
    extract_objects,
    objects_from_labels,
)


def _within(value: float, expected: float, rel: float = 0.02) -> bool:
    return abs(value - expected) <= rel * abs(expected)


def _disc_map(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    prob = np.zeros(shape, np.float32)
    for row, col in centres:
        rr, cc = disk((row, col), radius, shape=shape)
        prob[rr, cc] = 0.9
    return prob


def test_counts_separate_discs_and_numbers_them_consecutively() -> None:
    centres = [(30, 30), (30, 100), (100, 30), (100, 100), (160, 60)]
    labels, objects = extract_objects(_disc_map((200, 150), centres, 15), 0.5, min_area=10)
    assert labels.dtype == np.uint16 and labels.shape == (200, 150)
    assert len(objects) == 5
    assert [o.id for o in objects] == [1, 2, 3, 4, 5]
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    for obj in objects:
        assert obj.area == np.count_nonzero(labels == obj.id)


def test_min_area_drops_small_objects_and_relabels() -> None:
    prob = _disc_map((100, 100), [(20, 20), (70, 70)], 10)
    prob[50, 10] = 1.0  # 1-pixel speck between the discs in raster order
    labels, objects = extract_objects(prob, 0.5, min_area=5)
    assert len(objects) == 2 and labels.max() == 2
    assert labels[50, 10] == 0
    labels, objects = extract_objects(prob, 0.5, min_area=0)
    assert len(objects) == 3


def test_diagonal_neighbours_are_one_object() -> None:
    prob = np.zeros((10, 10), np.float32)
    prob[2:4, 2:4] = 1
    prob[4:6, 4:6] = 1  # touches the first square only at a corner
    _, objects = extract_objects(prob, 0.5, min_area=0)
    assert len(objects) == 1 and objects[0].area == 8


def test_threshold_is_strict() -> None:
    prob = np.full((5, 5), 0.5, np.float32)
    _, objects = extract_objects(prob, 0.5, 0)
    assert objects == []


def test_empty_map() -> None:
    labels, objects = extract_objects(np.zeros((20, 30), np.float32), 0.5, 0)
    assert objects == [] and not labels.any()


def test_ring_is_one_object_with_one_hole() -> None:
    prob = np.zeros((200, 200), np.float32)
    cv2.circle(prob, (100, 100), 60, 1.0, -1)
    cv2.circle(prob, (100, 100), 30, 0.0, -1)
    labels, objects = extract_objects(prob, 0.5, 0)
    assert len(objects) == 1
    ring = objects[0]
    assert len(ring.holes) == 1
    hole = np.array(ring.holes[0])
    radii = np.hypot(hole[:, 0] - 100.5, hole[:, 1] - 100.5)
    assert np.all(np.abs(radii - 31) < 1.5)  # the hole is traced through the ring's inner pixels
    outer = np.array(ring.polygon)
    assert np.all(np.abs(np.hypot(outer[:, 0] - 100.5, outer[:, 1] - 100.5) - 60) < 1.5)
    assert ring.solidity < 0.8


def test_disc_inside_ring_is_a_separate_object() -> None:
    prob = np.zeros((200, 200), np.float32)
    cv2.circle(prob, (100, 100), 60, 1.0, -1)
    cv2.circle(prob, (100, 100), 30, 0.0, -1)
    cv2.circle(prob, (100, 100), 10, 1.0, -1)
    _, objects = extract_objects(prob, 0.5, 0)
    assert len(objects) == 2
    assert sorted(len(o.holes) for o in objects) == [0, 1]


def test_disc_metrics() -> None:
    r = 40
    prob = _disc_map((120, 130), [(60, 64)], r)
    _, (obj,) = extract_objects(prob, 0.5, 0)
    assert _within(obj.area, math.pi * r**2)
    assert _within(obj.perimeter, 2 * math.pi * r)
    assert _within(obj.circularity, 1.0)
    assert _within(obj.equivalent_diameter, 2 * r)
    assert _within(obj.feret_max, 2 * r)
    assert _within(obj.feret_min, 2 * r)
    assert obj.eccentricity < 0.05
    assert obj.solidity > 0.97
    np.testing.assert_allclose(obj.centroid, [64.5, 60.5], atol=1e-6)


def test_ellipse_metrics() -> None:
    a, b = 60, 30
    prob = np.zeros((120, 160), np.float32)
    rr, cc = ellipse(60, 80, b, a, shape=prob.shape)  # semi-axes: rows b, columns a
    prob[rr, cc] = 1
    _, (obj,) = extract_objects(prob, 0.5, 0)
    h = (a - b) ** 2 / (a + b) ** 2
    ramanujan = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert _within(obj.area, math.pi * a * b)
    assert _within(obj.perimeter, ramanujan)
    assert _within(obj.equivalent_diameter, 2 * math.sqrt(a * b))
    assert _within(obj.feret_max, 2 * a)
    assert _within(obj.feret_min, 2 * b)
    assert _within(obj.eccentricity, math.sqrt(1 - (b / a) ** 2))
    assert obj.circularity < 0.9
    assert obj.bbox == [21, 31, 140, 90]


def test_rotated_rectangle_feret_min_is_its_width() -> None:
    prob = np.zeros((200, 200), np.float32)
    box = cv2.boxPoints(((100.0, 100.0), (120.0, 40.0), 30.0))
    cv2.fillPoly(prob, [np.round(box).astype(np.int32)], 1.0)
    _, (obj,) = extract_objects(prob, 0.5, 0)
    assert _within(obj.feret_min, 40, rel=0.05)
    assert _within(obj.feret_max, math.hypot(120, 40), rel=0.03)


def test_coordinate_convention_on_a_block() -> None:
    prob = np.zeros((40, 50), np.float32)
    prob[10:20, 20:30] = 1  # rows 10..19, columns 20..29
    labels, (obj,) = extract_objects(prob, 0.5, 0)
    assert obj.bbox == [20, 10, 30, 20]
    assert labels[obj.bbox[1] : obj.bbox[3], obj.bbox[0] : obj.bbox[2]].all()
    np.testing.assert_allclose(obj.centroid, [25.0, 15.0])
    corners = [(20.5, 10.5), (20.5, 19.5), (29.5, 10.5), (29.5, 19.5)]
    assert sorted(map(tuple, obj.polygon)) == corners
    assert obj.holes == []


def test_thin_objects_get_a_pixel_outline() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[2, 2] = 1
    prob[10, 5:12] = 1
    _, (dot, line) = extract_objects(prob, 0.5, 0)
    assert sorted(map(tuple, dot.polygon)) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    xs, ys = zip(*line.polygon, strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == (5, 12, 10, 11)


def test_metrics_and_types_are_plain_python() -> None:
    _, (obj,) = extract_objects(_disc_map((50, 50), [(25, 25)], 10), 0.5, 0)
    assert isinstance(obj, SegmentedObject)
    metrics = obj.metrics()
    assert tuple(metrics) == METRIC_NAMES
    assert all(type(v) is float for v in metrics.values())
    assert type(obj.id) is int and all(type(v) is int for v in obj.bbox)
    assert all(type(v) is float for point in obj.polygon for v in point)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_threshold_out_of_range(threshold: float) -> None:
    with pytest.raises(InvalidParameters, match="threshold"):
        extract_objects(np.zeros((5, 5), np.float32), threshold, 0)


@pytest.mark.parametrize("min_area", [-1, 2.5])
def test_min_area_invalid(min_area: int) -> None:
    with pytest.raises(InvalidParameters, match="min_area"):
        extract_objects(np.zeros((5, 5), np.float32), 0.5, min_area)


def test_probability_map_must_be_2d() -> None:
    with pytest.raises(InvalidImage):
        extract_objects(np.zeros((2, 5, 5), np.float32), 0.5, 0)


def test_more_objects_than_uint16_labels_is_refused() -> None:
    prob = np.zeros((520, 520), np.float32)
    prob[::2, ::2] = 1  # 260 x 260 = 67600 isolated pixels
    with pytest.raises(InvalidParameters, match=str(MAX_OBJECTS)) as info:
        extract_objects(prob, 0.5, 0)
    assert info.value.code == "too_many_objects"


def test_object_limit_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess, "MAX_OBJECTS", 100)  # measuring 65535 objects takes ~40 s
    prob = np.zeros((21, 20), np.float32)
    prob[:20:2, ::2] = 1  # 100 isolated pixels
    labels, objects = extract_objects(prob, 0.5, 0)
    assert labels.max() == 100 and len(objects) == 100
    prob[20, 0] = 1  # the 101st
    with pytest.raises(InvalidParameters):
        extract_objects(prob, 0.5, 0)


def test_objects_from_labels_matches_extract() -> None:
    labels, objects = extract_objects(_disc_map((80, 80), [(20, 20), (60, 50)], 12), 0.5, 0)
    assert objects_from_labels(labels) == objects


def _signed_area(ring: list[list[float]]) -> float:
    x, y = np.array(ring).T
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def test_rings_follow_the_right_hand_rule() -> None:
    prob = np.zeros((200, 200), np.float32)
    cv2.circle(prob, (100, 100), 60, 1.0, -1)
    cv2.circle(prob, (100, 100), 30, 0.0, -1)
    prob[5, 5:9] = 1  # thin object: pixel-hull outline
    _, objects = extract_objects(prob, 0.5, 0)
    assert len(objects) == 2
    for obj in objects:
        assert _signed_area(obj.polygon) > 0
        assert all(_signed_area(hole) < 0 for hole in obj.holes)


def test_numpy_scalars_are_valid_parameters() -> None:
    prob = _disc_map((30, 30), [(15, 15)], 5)
    _, objects = extract_objects(prob, np.float32(0.5), np.int64(3))  # type: ignore[arg-type]
    assert len(objects) == 1


def test_convex_metrics_equal_regionprops_without_rasterising_the_hull() -> None:
    """solidity, feret_max, eccentricity and the centroid come from the hull's half-planes and
    the moments (no convex-hull image): the values must be scikit-image's, to the last digit."""
    from skimage.measure import regionprops

    from ml_service.training.synthetic import KINDS, generate_sample

    rng = np.random.default_rng(5)
    labels_list = []
    for kind in KINDS:
        sample = generate_sample(rng, 192, kind)
        labels_list.append(extract_objects(sample.mask.astype(np.float32), 0.5, 0)[0])
    odd = np.zeros((12, 12), np.uint16)
    odd[1, 1] = 1  # one pixel
    odd[4, 2:9] = 2  # a one-pixel-wide line
    odd[6:11, 6] = 3  # a vertical one
    odd[7, 9] = odd[8, 10] = odd[9, 11] = 4  # a diagonal (8-connected)
    labels_list.append(odd)
    checked = 0
    for labels in labels_list:
        for region, obj in zip(regionprops(labels), objects_from_labels(labels), strict=True):
            assert obj.solidity == pytest.approx(region.solidity, abs=1e-12)
            assert obj.feret_max == pytest.approx(region.feret_diameter_max, abs=1e-9)
            assert obj.eccentricity == pytest.approx(region.eccentricity, abs=1e-9)
            row, col = region.centroid  # regionprops: pixel indices; ours: pixel centres at +0.5
            assert obj.centroid == pytest.approx([col + 0.5, row + 0.5], abs=1e-9)
            checked += 1
    assert checked > 20
