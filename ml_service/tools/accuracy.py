"""Accuracy report: IoU of each loaded model through the full engine path.

    python -m ml_service.tools.accuracy [--synthetic 32] [--markdown]

1. Held-out synthetic images (seeds never used in training), every kind, both bit depths and
   polarities: IoU against the generator's ground truth.
2. Real microscopy shipped inside PyPI packages (scikit-image's data folder; no download):
   IoU against a classical reference segmentation (Otsu threshold + watershed), which is itself
   an approximation, so this measures agreement with a classical pipeline, not ground truth.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from rich.console import Console
from rich.table import Table

from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.settings import load_settings
from ml_service.training.evaluation import classical_segmentation, iou, real_sample_images, to_uint8
from ml_service.training.synthetic import generate_sample

HELD_OUT_SEED = 20_000  # training uses seed 1, validation 10000


def synthetic_iou(engine: Engine, model: str, n: int) -> float:
    rng = np.random.default_rng(HELD_OUT_SEED)
    samples = [generate_sample(rng, 256) for _ in range(n)]
    futures = [engine.submit(s.image, model, SegmentationParams(0.5, 0)) for s in samples]
    return float(
        np.mean([iou(f.result().labels > 0, s.mask) for f, s in zip(futures, samples, strict=True)])
    )


def real_iou(engine: Engine, model: str) -> dict[str, float]:
    scores = {}
    for name, image in real_sample_images().items():
        reference = classical_segmentation(image)
        result = engine.segment(to_uint8(image), model, SegmentationParams(0.5, 0))
        scores[name] = iou(result.labels > 0, reference)
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="IoU of each model through the engine")
    parser.add_argument("--synthetic", type=int, default=32, help="held-out synthetic images")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with Engine.from_settings(load_settings()) as engine:
        rows = []
        for model in engine.batchers:
            real = real_iou(engine, model)
            rows.append((model, synthetic_iou(engine, model, args.synthetic), real))
    names = sorted(rows[0][2]) if rows else []
    if args.markdown:
        print(
            "| model | synthetic IoU | " + " | ".join(f"{n} IoU vs classical" for n in names) + " |"
        )
        print("|---|---|" + "---|" * len(names))
        for model, syn, real in rows:
            print(f"| {model} | {syn:.3f} | " + " | ".join(f"{real[n]:.3f}" for n in names) + " |")
        return
    table = Table(title="IoU (threshold 0.5)")
    for col in ("model", f"synthetic ({args.synthetic} held out)", *names):
        table.add_column(col, justify="right")
    for model, syn, real in rows:
        table.add_row(model, f"{syn:.3f}", *(f"{real[n]:.3f}" for n in names))
    Console().print(table)


if __name__ == "__main__":
    main()
