"""Instance separation on drawn shapes whose answer is known: touching discs, an annulus,
a large blob, and objects across tile seams through the engine's CPU stages."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from ml_service.imaging.instances import split_instances
from ml_service.imaging.postprocess import extract_objects
from ml_service.imaging.preprocess import Restore, tile
from ml_service.serving.cpu_stages import postprocess_outputs


def _discs(shape: tuple[int, int], discs: list[tuple[int, int, float]]) -> list[np.ndarray]:
    out = []
    for row, col, radius in discs:
        m = np.zeros(shape, bool)
        m[disk((row, col), radius, shape=shape)] = True
        out.append(m)
    return out


@pytest.mark.parametrize("radius,size_scale", [(8, 1.0), (15, 1.0), (22, 1.0), (45, 2.0)])
def test_two_touching_discs_become_two_objects_of_the_right_area(
    radius: int, size_scale: float
) -> None:
    gap = int(1.6 * radius)  # centres 1.6 r apart: the discs overlap, the waist is 0.6 r
    shape = (6 * radius, 6 * radius)
    a, b = _discs(shape, [(3 * radius, 2 * radius, radius), (3 * radius, 2 * radius + gap, radius)])
    labels = split_instances(a | b, size_scale)
    assert labels.dtype == np.int32 and labels.max() == 2
    for disc in (a, b):
        values, counts = np.unique(labels[disc], return_counts=True)
        main = values[counts.argmax()]
        # each object holds its own disc's half of the overlap: within 10 % of the disc's area
        area = np.count_nonzero(labels == main)
        assert abs(area - (disc.sum() - (a & b).sum() / 2)) <= 0.1 * disc.sum()


def test_a_cluster_of_touching_discs_is_counted() -> None:
    shape = (200, 200)
    centres = [(60, 60), (60, 84), (84, 60), (84, 84), (140, 140)]
    mask = np.logical_or.reduce(_discs(shape, [(r, c, 13) for r, c in centres]))
    labels, objects = extract_objects(mask.astype(np.float32), 0.5, 10, split=True)
    assert len(objects) == 5
    assert labels.dtype == np.uint16
    assert [o.id for o in objects] == [1, 2, 3, 4, 5]
    areas = sorted(o.area for o in objects[:4])
    assert areas[-1] - areas[0] <= 0.1 * areas[-1]  # the four of the cluster share it evenly


def test_without_split_touching_discs_are_one_object() -> None:
    mask = np.logical_or.reduce(_discs((100, 100), [(50, 35, 15), (50, 60, 15)]))
    _, merged = extract_objects(mask.astype(np.float32), 0.5, 0)
    _, split = extract_objects(mask.astype(np.float32), 0.5, 0, split=True)
    assert len(merged) == 1 and len(split) == 2
    assert merged[0].area == sum(o.area for o in split)


@pytest.mark.parametrize("outer,inner", [(20, 10), (70, 40)])
def test_an_annulus_stays_one_object_with_its_hole(outer: int, inner: int) -> None:
    shape = (2 * outer + 20, 2 * outer + 20)
    centre = (outer + 10, outer + 10)
    ring = np.zeros(shape, bool)
    ring[disk(centre, outer, shape=shape)] = True
    ring[disk(centre, inner, shape=shape)] = False
    labels, objects = extract_objects(ring.astype(np.float32), 0.5, 0, split=True)
    assert len(objects) == 1
    assert labels[centre] == 0
    assert len(objects[0].holes) == 1
    assert objects[0].area == ring.sum()


def _wobbly_annulus(outer: int, inner: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An annulus whose thickness varies around it (thick and thin parts look like waists)."""
    size = 2 * outer + 40
    centre = (size // 2, size // 2)
    rows, cols = np.mgrid[:size, :size]
    angle = np.arctan2(rows - centre[0], cols - centre[1])
    radius = np.hypot(rows - centre[0], cols - centre[1])
    wobble = 0.25 * (outer - inner)
    ring = (radius < outer + wobble * np.sin(3 * angle)) & (
        radius > inner + wobble * np.cos(2 * angle + 1)
    )
    return ring, centre


@pytest.mark.parametrize("outer,inner", [(20, 10), (40, 30), (70, 40), (70, 55), (120, 100)])
def test_an_annulus_of_uneven_thickness_stays_one_object_with_its_hole(
    outer: int, inner: int
) -> None:
    ring, centre = _wobbly_annulus(outer, inner)
    labels, objects = extract_objects(ring.astype(np.float32), 0.5, 0, split=True)
    assert len(objects) == 1
    assert labels[centre] == 0 and len(objects[0].holes) == 1
    assert objects[0].area == ring.sum()


def test_a_curved_rod_of_uneven_thickness_stays_one_object() -> None:
    # a half ring (no hole) whose thickness varies: two thick ends and a thin middle
    ring, centre = _wobbly_annulus(60, 35)
    rod = ring & (np.arange(ring.shape[0])[:, None] < centre[0])
    labels = split_instances(rod)
    assert labels.max() == 1 and np.array_equal(labels > 0, rod)


@pytest.mark.parametrize("radius,offset", [(12, 62), (16, 66), (20, 64)])
def test_a_ring_touching_discs_is_never_cut(radius: int, offset: int) -> None:
    ring, centre = _wobbly_annulus(50, 30)
    discs = _discs(
        ring.shape,
        [(centre[0], centre[1] + offset, radius), (centre[0] - offset, centre[1], radius)],
    )
    labels = split_instances(np.logical_or.reduce([ring, *discs]))
    assert labels[centre] == 0
    # the ring away from the discs is one object (a disc may join it or split off)
    assert len(np.unique(labels[ring & ~np.logical_or.reduce(discs)])) == 1


@pytest.mark.parametrize("radius", [60, 100, 150])
def test_two_touching_large_discs_are_split(radius: int) -> None:
    # large objects: markers searched on a shrunk mask; the cut still lands at the waist
    shape = (3 * radius, 5 * radius)
    a, b = _discs(
        shape,
        [(3 * radius // 2, radius + 10, radius), (3 * radius // 2, 27 * radius // 10 + 10, radius)],
    )
    labels = split_instances(a | b)
    assert labels.max() == 2
    for disc in (a, b):
        values, counts = np.unique(labels[disc], return_counts=True)
        area = np.count_nonzero(labels == values[counts.argmax()])
        assert abs(area - (disc.sum() - (a & b).sum() / 2)) <= 0.05 * disc.sum()


def test_a_large_disc_is_not_split() -> None:
    shape = (320, 320)
    (blob,) = _discs(shape, [(160, 160, 150)])
    assert split_instances(blob).max() == 1


def test_empty_and_separate_objects_pass_through() -> None:
    assert split_instances(np.zeros((30, 40), bool)).max() == 0
    mask = np.logical_or.reduce(_discs((60, 60), [(15, 15, 8), (45, 45, 8)]))
    labels = split_instances(mask)
    assert labels.max() == 2 and np.array_equal(labels > 0, mask)


def test_objects_across_tile_seams_are_found_once() -> None:
    # two touching discs and a lone disc on the seams of a 3 x 3 tile grid
    shape, size, overlap = (600, 600), 256, 32
    centres = [(230, 230, 20), (230, 262, 20), (440, 420, 25)]
    truth = np.logical_or.reduce(_discs(shape, centres)).astype(np.float32)
    tiles, grid = tile(truth, size, overlap)
    assert grid.n_tiles == 9
    labels, objects, _ = postprocess_outputs(list(tiles), Restore(grid), 0.5, 10, True)
    assert len(objects) == 3
    assert np.array_equal(labels > 0, truth > 0)
    masks = [(tiles > 0.5).astype(np.uint8)[i] for i in range(len(tiles))]  # device-threshold path
    labels_u8, objects_u8, _ = postprocess_outputs(masks, Restore(grid), 0.5, 10, True)
    assert np.array_equal(labels_u8, labels) and len(objects_u8) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        split_instances(np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError):
        split_instances(np.zeros((3, 3), bool), size_scale=0)
