"""Acceptance check of a set of weights through the engine, before they replace the demo ones.

    python -m ml_service.training.acceptance --weights-dir models/weights [--models unet ...]

Two measurements, both through :class:`ml_service.serving.engine.Engine` (CPU, torch backend,
threshold 0.5, ``min_area`` 10, touching objects split as by default; ``--no-split`` turns the
split off to see the weights alone):

- **drawn shapes**: a bright disc of radius 10 to 150 px, ellipses and annuli (with their hole),
  each alone on a dark canvas 2.6 times its radius wide (at least 96 px) with mild noise, 8-bit.
  Score: IoU of the drawn object with the returned object that overlaps it most (holes count:
  a filled hole lowers the IoU). Canvases above 384 px are tiled by the engine, smaller ones
  letterboxed, so both paths are seen.
- **touching clusters**: held-out synthetic ``"clusters"`` images (seed 20000, never trained
  on), AP at IoU 0.5 of the returned instances.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ml_service.imaging.matching import average_precision
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.settings import EngineSettings
from ml_service.training.evaluation import iou
from ml_service.training.synthetic import generate_sample
from models.registry import MODEL_NAMES
from models.weights import DEFAULT_WEIGHTS_DIR

CLUSTER_SEED = 20_000
PARAMS = SegmentationParams(threshold=0.5, min_area=10)


@dataclass(frozen=True)
class Shape:
    """A drawn object: ``image`` (H, W) uint8, ``truth`` (H, W) bool."""

    name: str
    image: np.ndarray
    truth: np.ndarray


def _canvas(radius: float, seed: int) -> tuple[np.ndarray, tuple[int, int], np.random.Generator]:
    side = max(96, round(2.6 * radius))
    return np.zeros((side, side), np.uint8), (side // 2, side // 2), np.random.default_rng(seed)


def _finish(name: str, truth: np.ndarray, rng: np.random.Generator) -> Shape:
    image = np.where(truth, 190.0, 30.0) + rng.normal(0.0, 6.0, truth.shape)
    return Shape(name, np.clip(np.rint(image), 0, 255).astype(np.uint8), truth.astype(bool))


def drawn_shapes() -> list[Shape]:
    """Discs of radius 10-150, ellipses and annuli, one per canvas."""
    shapes = []
    for i, r in enumerate((10, 20, 30, 45, 70, 100, 150)):
        truth, c, rng = _canvas(r, i)
        cv2.circle(truth, c, r, 1, -1)
        shapes.append(_finish(f"disc r{r}", truth, rng))
    for i, (a, b, angle) in enumerate(((40, 20, 30.0), (90, 45, 120.0), (140, 70, 0.0))):
        truth, c, rng = _canvas(a, 10 + i)
        cv2.ellipse(truth, c, (a, b), angle, 0, 360, 1, -1)
        shapes.append(_finish(f"ellipse {a}x{b}", truth, rng))
    for i, (outer, inner) in enumerate(((30, 15), (70, 35), (120, 70))):
        truth, c, rng = _canvas(outer, 20 + i)
        cv2.circle(truth, c, outer, 1, -1)
        cv2.circle(truth, c, inner, 0, -1)
        shapes.append(_finish(f"annulus {outer}/{inner}", truth, rng))
    return shapes


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(data.tobytes())


def object_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    """IoU of ``truth`` with the returned object that overlaps it most (0 if none does)."""
    hits = labels[truth & (labels > 0)]
    if hits.size == 0:
        return 0.0
    best = int(np.bincount(hits).argmax())
    return iou(labels == best, truth)


def measure(
    engine: Engine, model: str, n_clusters: int, params: SegmentationParams = PARAMS
) -> dict[str, Any]:
    """Per-shape IoU and the clusters' mean AP50 for one model."""
    shapes = {}
    for shape in drawn_shapes():
        result = engine.segment(_png(shape.image), model, params)
        shapes[shape.name] = round(object_iou(result.labels, shape.truth), 4)
    rng = np.random.default_rng(CLUSTER_SEED)
    aps = []
    for _ in range(n_clusters):
        sample = generate_sample(rng, 256, "clusters")
        result = engine.segment(_png(sample.image), model, params)
        aps.append(average_precision(sample.labels, result.labels.astype(np.int32), 0.5))
    return {
        "shapes": shapes,
        "shapes_min_iou": min(shapes.values()),
        "clusters_ap50": round(float(np.mean(aps)), 4) if aps else None,
    }


def run(
    weights_dir: Path, models: tuple[str, ...], n_clusters: int, split: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = EngineSettings(
            device="cpu",
            models=models,
            weights_dir=weights_dir,
            backend="torch",
            profiles_path=Path(tmp) / "batch_sizes.json",
            onnx_cache_dir=Path(tmp) / "onnx",
        )
        with Engine.from_settings(settings) as engine:
            params = SegmentationParams(PARAMS.threshold, PARAMS.min_area, split=split)
            return {m: measure(engine, m, n_clusters, params) for m in models}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--clusters", type=int, default=16, help="held-out cluster images")
    parser.add_argument("--no-split", action="store_true", help="leave touching objects merged")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.weights_dir, tuple(args.models), args.clusters, split=not args.no_split)
    print(json.dumps(report, indent=2))  # the report is the command's output


if __name__ == "__main__":
    main()
