"""Segment one image through the engine and print its polygons (``make run``).

    python -m ml_service.tools.demo [--image PATH] [--model hrnet] [--threshold 0.5] [--min-area 50]
                              [--geojson OUT.geojson]

Without ``--image`` it segments a generated microscopy-like image (cells, 512×384, 16-bit).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.settings import load_settings
from ml_service.training.synthetic import generate_sample


def sample_png() -> bytes:
    """A deterministic synthetic 16-bit PNG, 512×384, two 256-px tiles of cells side by side."""
    rng = np.random.default_rng(7)
    left = generate_sample(rng, 256, "cells").image.astype(np.uint16)
    right = generate_sample(rng, 256, "cells").image.astype(np.uint16)
    image = np.concatenate([left, right], axis=1)
    image = np.concatenate([image, image[:128]], axis=0)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path)
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-area", type=int, default=50)
    parser.add_argument("--geojson", type=Path, help="write the GeoJSON FeatureCollection here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = args.image.read_bytes() if args.image else sample_png()
    settings = load_settings()
    with Engine.from_settings(settings) as engine:
        result = engine.segment(data, args.model, SegmentationParams(args.threshold, args.min_area))
    console = Console()
    table = Table(
        title=f"{args.image or 'generated sample'}: {result.width}×{result.height}, "
        f"{result.model}/{result.variant}, {len(result.objects)} objects, "
        f"{result.timings_ms['total']:.0f} ms"
    )
    for col in ("id", "area", "circularity", "centroid", "holes", "polygon (first points)"):
        table.add_column(col)
    for obj in result.objects:
        ring = ", ".join(f"({x:.0f},{y:.0f})" for x, y in obj.polygon[:4])
        table.add_row(
            str(obj.id),
            f"{obj.area:.0f}",
            f"{obj.circularity:.2f}",
            f"({obj.centroid[0]:.1f}, {obj.centroid[1]:.1f})",
            str(len(obj.holes)),
            ring + (" …" if len(obj.polygon) > 4 else ""),
        )
    console.print(table)
    if args.geojson:
        args.geojson.write_text(json.dumps(result.to_geojson()))
        console.print(f"GeoJSON written to {args.geojson}")


if __name__ == "__main__":
    main()
