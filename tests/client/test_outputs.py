"""Output names, atomic writes and the objects table (pure)."""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath

from cellseg_client.cli.outputs import (
    CSV_COLUMNS,
    objects_csv,
    output_names,
    output_paths,
    write_atomic,
)
from cellseg_client.files import LocalImage


def image(rel: str, root: str = "/data") -> LocalImage:
    return LocalImage(Path(root) / rel, 1, PurePosixPath(rel))


def test_names_follow_the_relative_path_and_stay_unique() -> None:
    ims = [
        image("a/x.png"),
        image("a/x.tif"),
        image("b/x.png"),
        image("summary.png"),
        image("b/x.png", root="/other"),
    ]
    digests = {im.path: f"{i:064x}" for i, im in enumerate(ims)}
    names = output_names(ims, digests)
    assert names[ims[0].path] == "a/x.png" and names[ims[1].path] == "a/x.tif"
    assert names[ims[2].path] == "b/x.png"  # the same relative path under two inputs
    assert names[ims[3].path] == "summary.png"  # never overwrites summary.json
    assert names[ims[4].path] == "b/x.png-" + digests[ims[4].path][:8]
    assert len(set(names.values())) == len(ims)


def test_output_paths_by_format(tmp_path: Path) -> None:
    paths = output_paths(tmp_path, "a/x", ["json", "geojson", "coco", "mask"])
    assert [p.relative_to(tmp_path).as_posix() for p in paths.values()] == [
        "a/x.json",
        "a/x.geojson",
        "a/x.coco.json",
        "a/x.mask.png",
    ]


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "f.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_objects_csv_has_the_documented_columns_and_one_row_per_object() -> None:
    metrics = {m: float(i) for i, m in enumerate(CSV_COLUMNS[2:-2])}
    result = {
        "objects": [
            {"id": 1, "centroid": [3.5, 4.5], "metrics": metrics},
            {"id": 2, "centroid": [1.0, 2.0], "metrics": metrics},
        ]
    }
    rows = list(
        csv.DictReader(
            io.StringIO(objects_csv([("p/a.png", result), ("b.png", {"objects": []})]).decode())
        )
    )
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["image"], r["object_id"]) for r in rows] == [("p/a.png", "1"), ("p/a.png", "2")]
    assert rows[0]["centroid_x"] == "3.5" and rows[0]["feret_max"] == str(metrics["feret_max"])
