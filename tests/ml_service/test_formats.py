"""Output encoders: JSON, QuPath GeoJSON, 16-bit label PNG and COCO RLE."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from ml_service.errors import InvalidParameters
from ml_service.imaging.formats import (
    label_mask_png,
    objects_to_coco,
    objects_to_geojson,
    objects_to_json,
)
from ml_service.imaging.imageio import decode_image
from ml_service.imaging.postprocess import METRIC_NAMES, SegmentedObject, extract_objects


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[SegmentedObject]]:
    """A ring (one hole), two discs, and a block touching the first and last pixel."""
    prob = np.zeros((120, 160), np.float32)
    cv2.circle(prob, (50, 50), 40, 1.0, -1)
    cv2.circle(prob, (50, 50), 20, 0.0, -1)
    cv2.circle(prob, (120, 40), 15, 1.0, -1)
    cv2.circle(prob, (120, 95), 10, 1.0, -1)
    prob[:3, :3] = 1.0
    prob[-2:, -4:] = 1.0
    return extract_objects(prob, 0.5, min_area=0)


def test_json_is_serialisable_and_complete(scene: tuple[np.ndarray, list[SegmentedObject]]) -> None:
    labels, objects = scene
    out = json.loads(json.dumps(objects_to_json(objects, 160, 120)))
    assert out["width"] == 160 and out["height"] == 120 and out["count"] == len(objects) == 5
    ring = next(o for o in out["objects"] if o["holes"])
    assert set(ring) == {"id", "polygon", "holes", "bbox", "centroid", "metrics"}
    assert tuple(ring["metrics"]) == METRIC_NAMES
    assert ring["polygon"] == objects[ring["id"] - 1].polygon


def test_geojson_features_are_closed_qupath_detections(
    scene: tuple[np.ndarray, list[SegmentedObject]],
) -> None:
    _, objects = scene
    collection = json.loads(json.dumps(objects_to_geojson(objects)))
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == len(objects)
    for feature, obj in zip(collection["features"], objects, strict=True):
        assert feature["type"] == "Feature" and feature["id"] == str(obj.id)
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        rings = geometry["coordinates"]
        assert len(rings) == 1 + len(obj.holes)
        assert rings[0][:-1] == obj.polygon
        for ring in rings:
            assert ring[0] == ring[-1] and len(ring) >= 4
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "Cell"}
        assert props["measurements"] == obj.metrics()
    assert sum(len(f["geometry"]["coordinates"]) == 2 for f in collection["features"]) == 1


def test_geojson_extra_properties(scene: tuple[np.ndarray, list[SegmentedObject]]) -> None:
    _, objects = scene
    extra = {"model": "unet", "classification": {"name": "Nucleus"}}
    feature = objects_to_geojson(objects, properties=extra)["features"][0]
    assert feature["properties"]["model"] == "unet"
    assert feature["properties"]["classification"] == {"name": "Nucleus"}
    assert feature["properties"]["objectType"] == "detection"


def test_geojson_of_no_objects() -> None:
    assert objects_to_geojson([]) == {"type": "FeatureCollection", "features": []}


def test_label_png_roundtrips_16bit_exactly() -> None:
    labels = np.random.default_rng(0).integers(0, 65536, (37, 53)).astype(np.uint16)
    data = label_mask_png(labels)
    assert data.startswith(b"\x89PNG")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, labels)
    np.testing.assert_array_equal(decode_image(data, max_pixels=10_000), labels)


def test_label_png_accepts_wider_int_types_in_range() -> None:
    labels = np.array([[0, 1], [300, 65535]], np.int64)
    decoded = cv2.imdecode(np.frombuffer(label_mask_png(labels), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, labels)


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((2, 4, 4), np.uint16),
        np.array([[0, 70000]], np.int32),
        np.array([[0, -1]], np.int32),
    ],
)
def test_label_png_rejects_invalid_labels(labels: np.ndarray) -> None:
    with pytest.raises(InvalidParameters):
        label_mask_png(labels)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
def test_coco_rle_matches_pycocotools_and_decodes_back(
    scene: tuple[np.ndarray, list[SegmentedObject]],
) -> None:
    labels, objects = scene
    coco = json.loads(json.dumps(objects_to_coco(labels, objects, 7, "a.png", 160, 120)))
    assert coco["images"] == [{"id": 7, "file_name": "a.png", "width": 160, "height": 120}]
    assert coco["categories"][0]["id"] == 1
    assert len(coco["annotations"]) == len(objects)
    for ann, obj in zip(coco["annotations"], objects, strict=True):
        mask = labels == obj.id
        rle = ann["segmentation"]
        assert rle["size"] == [120, 160] and isinstance(rle["counts"], str)
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"] == reference["counts"].decode("ascii")
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert ann["area"] == obj.area == mask.sum()
        rows, cols = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (x, y, w, h) == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1 and ann["image_id"] == 7
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(objects) + 1))


def test_coco_annotation_ids_can_continue_a_dataset(
    scene: tuple[np.ndarray, list[SegmentedObject]],
) -> None:
    labels, objects = scene
    coco = objects_to_coco(labels, objects, 2, "b.png", 160, 120, first_annotation_id=101)
    assert [a["id"] for a in coco["annotations"]] == list(range(101, 101 + len(objects)))


def test_coco_rejects_mismatched_size(scene: tuple[np.ndarray, list[SegmentedObject]]) -> None:
    labels, objects = scene
    with pytest.raises(InvalidParameters):
        objects_to_coco(labels, objects, 1, "a.png", 120, 160)
