"""Job-level GeoJSON/COCO documents merged from per-image results (pure)."""

from __future__ import annotations

from typing import Any

from backend.exports import ImagePayload, merge_coco, merge_geojson


def _feature(fid: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": fid,
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
        "properties": {"objectType": "detection", "label": int(fid)},
    }


def _coco(image_id: int, n: int) -> dict[str, Any]:
    return {
        "images": [{"id": image_id, "file_name": "image", "width": 8, "height": 6}],
        "annotations": [{"id": k + 1, "image_id": image_id, "area": 1.0} for k in range(n)],
        "categories": [{"id": 1, "name": "cell", "supercategory": "cell"}],
    }


def test_merge_geojson_tags_features_with_their_image() -> None:
    a = ImagePayload("ia", 0, "a.png", {"type": "FeatureCollection", "features": [_feature("1")]})
    b = ImagePayload(
        "ib", 1, "b.png", {"type": "FeatureCollection", "features": [_feature("1"), _feature("2")]}
    )
    merged = merge_geojson([a, b])
    assert merged["type"] == "FeatureCollection"
    feats = merged["features"]
    assert [f["properties"]["image_id"] for f in feats] == ["ia", "ib", "ib"]
    assert [f["properties"]["filename"] for f in feats] == ["a.png", "b.png", "b.png"]
    assert len({f["id"] for f in feats}) == 3  # unique within the job
    assert feats[0]["properties"]["label"] == 1  # original properties kept
    assert "image_id" not in a.payload["features"][0]["properties"]  # inputs untouched


def test_merge_geojson_of_nothing_is_an_empty_collection() -> None:
    assert merge_geojson([]) == {"type": "FeatureCollection", "features": []}


def test_merge_coco_renumbers_images_and_annotations() -> None:
    items = [
        ImagePayload("ia", 0, "a.png", _coco(0, 2)),
        ImagePayload("ic", 2, "c.png", _coco(2, 3)),  # seq 1 failed: absent
    ]
    merged = merge_coco(items)
    assert [im["id"] for im in merged["images"]] == [1, 3]
    assert [im["file_name"] for im in merged["images"]] == ["a.png", "c.png"]
    assert merged["images"][0]["width"] == 8
    assert [a["id"] for a in merged["annotations"]] == [1, 2, 3, 4, 5]
    assert [a["image_id"] for a in merged["annotations"]] == [1, 1, 3, 3, 3]
    assert merged["categories"] == [{"id": 1, "name": "cell", "supercategory": "cell"}]
