"""Job-level result documents merged from the per-image results the workers stored (pure).

- GeoJSON: one ``FeatureCollection``; every feature gets ``image_id`` and ``filename``
  properties and an id unique in the job (``"<image_id>:<per-image feature id>"``).
- GeoJSON per image (:func:`geojson_files`, zipped by :func:`zip_json`): one
  ``FeatureCollection`` per image, the form QuPath imports onto each image.
- COCO: one dataset; image ``i`` of the job (``seq`` 0-based) has COCO id ``seq + 1`` and the
  upload's file name; annotation ids are renumbered ``1..N`` in upload order; categories are
  the union by id.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImagePayload:
    """One image's stored result part (decoded JSON) with what identifies the image."""

    image_id: str
    seq: int
    filename: str
    payload: dict[str, Any]


def merge_geojson(items: Iterable[ImagePayload]) -> dict[str, Any]:
    """One FeatureCollection of every image's features, tagged with their image."""
    features: list[dict[str, Any]] = []
    for item in items:
        for feature in item.payload.get("features", []):
            merged = dict(feature)
            merged["properties"] = {
                **(feature.get("properties") or {}),
                "image_id": item.image_id,
                "filename": item.filename,
            }
            if "id" in feature:
                merged["id"] = f"{item.image_id}:{feature['id']}"
            features.append(merged)
    return {"type": "FeatureCollection", "features": features}


def merge_coco(items: Iterable[ImagePayload]) -> dict[str, Any]:
    """One COCO dataset: image ids ``seq + 1``, annotation ids renumbered from 1."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[int, dict[str, Any]] = {}
    next_id = 1
    for item in items:
        coco_id = item.seq + 1
        stored = item.payload.get("images") or [{}]
        images.append({**stored[0], "id": coco_id, "file_name": item.filename})
        for ann in item.payload.get("annotations", []):
            annotations.append({**ann, "id": next_id, "image_id": coco_id})
            next_id += 1
        for cat in item.payload.get("categories", []):
            categories.setdefault(int(cat["id"]), cat)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [categories[k] for k in sorted(categories)],
    }


def geojson_files(items: Iterable[ImagePayload]) -> dict[str, dict[str, Any]]:
    """One FeatureCollection per image, by file name ``<upload's stem>.geojson`` (QuPath
    imports a GeoJSON file onto the image it is opened with, so each image gets its own;
    repeated stems get ``-2``, ``-3``... in upload order). Features keep their per-image ids
    and gain ``image_id`` and ``filename`` properties."""
    files: dict[str, dict[str, Any]] = {}
    for item in sorted(items, key=lambda i: i.seq):
        stem = item.filename.rsplit(".", 1)[0] if "." in item.filename[1:] else item.filename
        name, n = f"{stem}.geojson", 1
        while name in files:
            n += 1
            name = f"{stem}-{n}.geojson"
        features = [
            {
                **feature,
                "properties": {
                    **(feature.get("properties") or {}),
                    "image_id": item.image_id,
                    "filename": item.filename,
                },
            }
            for feature in item.payload.get("features", [])
        ]
        files[name] = {"type": "FeatureCollection", "features": features}
    return files


def zip_json(files: dict[str, dict[str, Any]]) -> bytes:
    """A zip archive (deflated) of ``{name: JSON document}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, document in files.items():
            archive.writestr(name, json.dumps(document, separators=(",", ":")))
    return buf.getvalue()
