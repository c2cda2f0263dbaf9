"""Accuracy benchmark: object-level scores of each loaded model through the whole engine path.

    python -m ml_service.accuracy [--images 12] [--markdown]

Every image goes through ``Engine.submit`` as PNG bytes (decode, normalise, letterbox or tile,
batch, model, stitch, threshold, instance separation, measurement), exactly as a worker runs it.
Scores (``ml_service.imaging.matching``): AP at IoU 0.5 and 0.75 (``TP / (TP + FP + FN)`` after
one-to-one matching, the 2018 Data Science Bowl's score) and the mean IoU of the pairs matched
at 0.5, averaged over the images of a set.

1. Held-out synthetic sets (seeds never used in training or validation), with exact ground
   truth: ``touching`` (the generator's clusters of touching and overlapping cells),
   ``spheroids`` (large blobs, some with a hollow core), ``rings`` (annuli among cells) and
   ``mixed sizes`` (cell scenes enlarged 1-3x, objects 12-120 px across; also run with
   ``diameter=auto``). Each model runs with ``split`` on (the default) and off; the classical
   pipeline (``ml_service.training.evaluation.classical_labels``) runs on the same images.
2. Real images shipped inside scikit-image (no download), which have no instance annotation:
   ``coins`` (24 coins): objects found, and how many are mostly background (their mean grey
   below the image's Otsu threshold); ``cell`` and ``ihc`` (haematoxylin channel): AP against
   the classical pipeline's labels, the best reference at hand (agreement, not truth).
3. Time: per-image milliseconds through the engine, one image at a time, with ``split`` off/on
   and with ``diameter`` given (mixed-size set).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import color, data, filters

from ml_service.imaging.matching import match_instances
from ml_service.serving.engine import Engine, SegmentationParams, SegmentationResult
from ml_service.settings import load_settings
from ml_service.tools.pipeline_rate import encode_png
from ml_service.training.evaluation import classical_labels, to_uint8
from ml_service.training.synthetic import Sample, generate_sample

HELD_OUT_SEED = 40_000
"""Training uses seed 1, validation 10000, the engine tests 123456, the split tuning 31000."""

SETS: tuple[str, ...] = ("touching", "spheroids", "rings", "mixed sizes")


@dataclass(frozen=True)
class Score:
    """Mean per-image AP@0.5, AP@0.75 and matched IoU of one method on one set."""

    ap50: float
    ap75: float
    iou: float

    @classmethod
    def of(cls, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Score:
        """Score ``(truth, prediction)`` label image pairs."""
        at50 = [match_instances(t, p, 0.5) for t, p in pairs]
        at75 = [match_instances(t, p, 0.75) for t, p in pairs]
        return cls(
            float(np.mean([m.ap for m in at50])),
            float(np.mean([m.ap for m in at75])),
            float(np.mean([m.mean_matched_iou for m in at50])),
        )

    def cells(self) -> str:
        return f"{self.ap50:.3f} | {self.ap75:.3f} | {self.iou:.3f}"


def _enlarge(sample: Sample, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """A sample drawn ``factor`` times larger: image bilinear, labels nearest."""
    h, w = sample.labels.shape
    size = (round(w * factor), round(h * factor))
    image = cv2.resize(sample.image, size, interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(sample.labels, size, interpolation=cv2.INTER_NEAREST)
    return image, labels


def synthetic_sets(n: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """``{set: [(image, truth labels)]}``, ``n`` held-out images per set."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    sets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, kind in (("touching", "cells"), ("spheroids", "spheroids"), ("rings", "rings")):
        sets[name] = [
            (s.image, s.labels) for s in (generate_sample(rng, 256, kind) for _ in range(n))
        ]
    sets["mixed sizes"] = [
        _enlarge(generate_sample(rng, 256, "cells"), float(rng.uniform(1.0, 3.0))) for _ in range(n)
    ]
    return sets


def run_engine(
    engine: Engine, model: str, images: Sequence[np.ndarray], params: SegmentationParams
) -> tuple[list[SegmentationResult], float]:
    """Results of each image (submitted one at a time, as PNG) and the median ms per image."""
    results, times = [], []
    for image in images:
        png = encode_png(image)
        t0 = time.perf_counter()
        results.append(engine.submit(png, model, params).result())
        times.append(1000 * (time.perf_counter() - t0))
    return results, float(np.median(times))


def diameter_error(results: Sequence[SegmentationResult], truths: Sequence[np.ndarray]) -> float:
    """Median relative error of ``diameter="auto"``'s estimate against the median equivalent
    diameter of the true objects."""
    errors = []
    for result, truth in zip(results, truths, strict=True):
        areas = np.bincount(truth.ravel())[1:]
        true = float(np.median(2 * np.sqrt(areas[areas > 0] / np.pi)))
        errors.append(abs((result.diameter_px or 0.0) - true) / true)
    return float(np.median(errors))


def real_images() -> dict[str, np.ndarray]:
    """The scikit-image sample images used (read from the installed package)."""
    haematoxylin = color.rgb2hed(data.immunohistochemistry())[..., 0]
    return {"coins": data.coins(), "cell": data.cell(), "ihc": to_uint8(haematoxylin)}


def coin_check(image: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """``(objects, background objects)``: objects whose mean grey is below Otsu's threshold."""
    cut = filters.threshold_otsu(image)
    ids = np.unique(labels[labels > 0])
    means = [float(image[labels == i].mean()) for i in ids]
    return len(ids), sum(m <= cut for m in means)


Row = tuple[str, str, str, Score]  # set, method, setting, score


def evaluate(
    engine: Engine, n: int, log: Callable[[str], None], only: Sequence[str] = SETS
) -> tuple[list[Row], list[str]]:
    """Every score row, and lines about the real images and the timings."""
    sets = {k: v for k, v in synthetic_sets(n).items() if k in only}
    rows: list[Row] = []
    notes: list[str] = []
    for name, pairs in sets.items():
        images, truths = [p[0] for p in pairs], [p[1] for p in pairs]
        classical = [classical_labels(im) for im in images]
        rows.append((name, "classical", "-", Score.of(list(zip(truths, classical, strict=True)))))
        for model in engine.batchers:
            settings = [
                ("split", SegmentationParams(0.5, 0)),
                ("no split", SegmentationParams(0.5, 0, split=False)),
            ]
            if name == "mixed sizes":
                settings.append(
                    ("split, diameter=auto", SegmentationParams(0.5, 0, diameter="auto"))
                )
            for label, params in settings:
                results, ms = run_engine(engine, model, images, params)
                found = [r.labels for r in results]
                rows.append((name, model, label, Score.of(list(zip(truths, found, strict=True)))))
                if params.diameter == "auto":
                    error = diameter_error(results, truths)
                    notes.append(f"diameter=auto | {model} | median relative error {error:.1%}")
                notes.append(f"time | {name} | {model} | {label} | {ms:.0f} ms/img (median)")
                log(f"{name} {model} {label}: {rows[-1][3].cells()} ({ms:.0f} ms)")
    for name, image in real_images().items() if "real" in only else ():
        reference = classical_labels(image)
        for model in ("classical", *engine.batchers):
            labels = (
                reference
                if model == "classical"
                else engine.segment(encode_png(image), model).labels
            )
            if name == "coins":
                count, background = coin_check(image, labels)
                notes.append(f"coins | {model} | {count} objects | {background} mostly background")
            else:
                score = Score.of([(reference, labels)])
                notes.append(
                    f"{name} vs classical | {model} | {score.cells()} | {int(labels.max())} objects"
                )
    return rows, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="instance accuracy of each model through the engine"
    )
    parser.add_argument("--images", type=int, default=12, help="held-out images per synthetic set")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument(
        "--sets",
        default=",".join((*SETS, "real")),
        help="comma-separated sets to run (default: all, with 'real' for the real images)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Engine.from_settings(load_settings()) as engine:
        only = [s.strip() for s in args.sets.split(",")]
        rows, notes = evaluate(engine, args.images, logging.getLogger(__name__).info, only)
    if args.markdown:
        print("| set | method | setting | AP@0.5 | AP@0.75 | matched IoU |")
        print("|---|---|---|---|---|---|")
    for name, method, setting, score in rows:
        print(f"| {name} | {method} | {setting} | {score.cells()} |")
    print()
    for line in notes:
        print(f"| {line} |")


if __name__ == "__main__":
    main()
