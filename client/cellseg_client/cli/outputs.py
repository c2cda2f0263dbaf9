"""Files a ``cellseg segment`` run writes in ``OUT``.

- ``<name>.json`` (result: polygons with holes, metrics, timings), ``<name>.geojson`` (QuPath
  detections), ``<name>.coco.json`` (COCO dataset of the image), ``<name>.mask.png`` (16-bit
  labels, 0 = background, k = object k), one set per image for the ``--format`` asked. ``<name>``
  is the image's path relative to the folder given, without its suffix (``plate1/A01``); when
  two images would share it, the suffix is kept (``A01.png``, ``A01.tif``).
- ``objects.csv``: one row per object, columns :data:`CSV_COLUMNS` (lengths in pixels).
- ``summary.json``: counts, each image's status, objects, error and outputs, skipped files.
- ``.cellseg/results/<sha256>.json``: each image's JSON result, the source of ``objects.csv``.

Every file is written atomically (temp file, then rename): a file that exists is complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cellseg_client.files import LocalImage

FORMATS: dict[str, str] = {
    "json": ".json",
    "geojson": ".geojson",
    "coco": ".coco.json",
    "mask": ".mask.png",
}
"""``--format`` names and the suffix of the file each writes."""

CSV_COLUMNS: tuple[str, ...] = (
    "image",
    "object_id",
    "area",
    "perimeter",
    "circularity",
    "equivalent_diameter",
    "feret_max",
    "feret_min",
    "solidity",
    "eccentricity",
    "centroid_x",
    "centroid_y",
)
"""Columns of ``objects.csv``:

- ``image``: the image's path relative to the folder given (its name when given directly);
- ``object_id``: the object's label in the mask (1..n, raster order of its first pixel);
- ``area``: pixels; ``perimeter``: Crofton perimeter, px; ``circularity``:
  ``4 pi area / perimeter**2``; ``equivalent_diameter``: diameter of the disc of equal area, px;
- ``feret_max`` / ``feret_min``: largest caliper diameter / smallest caliper width, px;
- ``solidity``: area / convex hull area; ``eccentricity``: of the ellipse with the same second
  moments, 0 (circle) to <1;
- ``centroid_x`` / ``centroid_y``: centre of mass, px (x right, y down; pixel (r, c) covers
  ``[c, c+1) x [r, r+1)``).
"""

METRICS = CSV_COLUMNS[2:-2]
CACHE_DIR = ".cellseg/results"
RESERVED = frozenset({"objects", "summary", "cellseg-manifest"})


def output_names(images: Sequence[LocalImage], digests: Mapping[Path, str]) -> dict[Path, str]:
    """Each image's ``<name>`` (see the module docstring), unique within the run."""
    stems = Counter(str(im.rel.with_suffix("")) for im in images)
    names: dict[Path, str] = {}
    taken: set[str] = set(RESERVED)
    for im in images:
        stem = str(im.rel.with_suffix(""))
        name = stem if stems[stem] == 1 and stem not in RESERVED else str(im.rel)
        if name in taken:
            name = f"{name}-{digests[im.path][:8]}"
        taken.add(name)
        names[im.path] = name
    return names


def output_paths(out: Path, name: str, formats: Sequence[str]) -> dict[str, Path]:
    return {fmt: out / PurePosixPath(name + FORMATS[fmt]) for fmt in formats}


def cache_path(out: Path, digest: str) -> Path:
    return out / CACHE_DIR / f"{digest}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(body: Any) -> bytes:
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def read_cached(out: Path, digest: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = json.loads(cache_path(out, digest).read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return body


def objects_csv(rows_by_image: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """``objects.csv`` from ``(image, result json)`` pairs, in the order given."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for image, result in rows_by_image:
        for obj in result.get("objects", []):
            metrics = obj.get("metrics", {})
            cx, cy = (obj.get("centroid") or [None, None])[:2]
            writer.writerow([image, obj.get("id"), *(metrics.get(m) for m in METRICS), cx, cy])
    return buf.getvalue().encode()
