"""Train or fine-tune a registry model, on synthetic images or on a folder of your own.

    python -m ml_service.train --model unet                      # the demo weights (synthetic)
    python -m ml_service.train --model unet --data DIR           # your annotated images
    make train-data DATA=DIR MODEL=unet

Folder naming rule: each image ``NAME.png`` / ``NAME.tif`` / ``NAME.jpg`` has its instance label
mask ``NAME_masks.png`` or ``NAME_masks.tif`` beside it (0 background, one value per object),
as Cellpose names its training data. A random ``--val-fraction`` of the images (at least one) is
held out for validation.

Training draws augmented crops (flips, 90-degree rotations, contrast/brightness/gamma jitter,
noise) and learns the foreground with a two-pixel gap between touching objects, which the
engine's instance split then separates cleanly. After every epoch (``--eval-every`` steps for
synthetic data) it reports instance AP at IoU 0.5 and pixel IoU on the validation images and
keeps the best checkpoint. It runs on a CUDA GPU when there is one (``--device auto``).

The output is ``<model>-<variant>.safetensors`` (tensors only, no optimizer state) plus its
sidecar JSON (data fingerprint, validation AP, ``train_diameter_px``: the median equivalent
diameter of the training objects) in ``--out``. With ``--data`` the default is
``trained-weights/``; serve it with ``ML_WEIGHTS_DIR=trained-weights ML_MODELS=<model>``.
Synthetic training writes the demo weights in ``models/weights/`` by default.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml_service.training.folder import DataError, fingerprint, load_pairs, split
from ml_service.training.loop import DEVICES, FitResult, LoopConfig, fit, pick_device
from ml_service.training.synthetic import make_labelled_dataset
from ml_service.training.targets import equivalent_diameters, separated_foreground
from models.registry import MODEL_NAMES, VARIANTS, ModelSpec, get_spec
from models.weights import DEFAULT_WEIGHTS_DIR, WeightPaths, load_weights, save_weights

log = logging.getLogger(__name__)

TRAIN_SEED = 1
VALIDATION_SEED = 10_000  # disjoint from the training seeds
DEFAULT_DATA_OUT = Path("trained-weights")
AUGMENTATION = "random crops, flips, 90-degree rotations, gamma/contrast/brightness, noise"


class Dataset:
    """Normalised images with instance labels, split for training and validation."""

    def __init__(
        self,
        train_images: list[np.ndarray],
        train_labels: list[np.ndarray],
        val_images: list[np.ndarray],
        val_labels: list[np.ndarray],
        description: dict[str, Any],
    ) -> None:
        self.train_images, self.train_labels = train_images, train_labels
        self.val_images, self.val_labels = val_images, val_labels
        self.description = description

    def train_diameter_px(self) -> float:
        """Median equivalent diameter of the training objects, in pixels."""
        return float(
            np.median(np.concatenate([equivalent_diameters(b) for b in self.train_labels]))
        )


def synthetic_dataset(size: int, n_train: int, n_val: int) -> Dataset:
    images, labels = make_labelled_dataset(TRAIN_SEED, n_train, size)
    val_images, val_labels = make_labelled_dataset(VALIDATION_SEED, n_val, size)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return Dataset(
        list(images),
        list(labels),
        list(val_images),
        list(val_labels),
        {
            "data": "ml_service.training.synthetic (cells, spheroids, rings, clusters, large)",
            "train_seed": TRAIN_SEED,
            "train_images": n_train,
            "data_fingerprint": digest,
            "validation": f"{n_val} held-out synthetic images, seed {VALIDATION_SEED}, {size}px",
        },
    )


def folder_dataset(folder: Path, val_fraction: float, seed: int) -> Dataset:
    pairs = load_pairs(folder)
    train, val = split(pairs, val_fraction, seed)
    return Dataset(
        [p.image for p in train],
        [p.labels for p in train],
        [p.image for p in val],
        [p.labels for p in val],
        {
            "data": f"folder {folder.name}",
            "train_images": len(train),
            "train_names": [p.name for p in train],
            "data_fingerprint": fingerprint(folder),
            "validation": f"{len(val)} held-out images: {', '.join(p.name for p in val)}",
        },
    )


def initial_model(spec: ModelSpec, init: str) -> tuple[torch.nn.Module, str]:
    """A fresh model (``scratch``) or one loaded from the weights in the folder ``init``."""
    model = spec.build()
    if init == "scratch":
        return model, "scratch"
    load_weights(model, spec, Path(init))
    return model, f"fine-tuned from {Path(init).name}/{spec.name}-{spec.variant}"


def write_weights(
    model: torch.nn.Module,
    spec: ModelSpec,
    out: Path,
    data: Dataset,
    cfg: LoopConfig,
    result: FitResult,
    run: dict[str, Any],
) -> WeightPaths:
    description = dict(data.description)
    validation = {
        "data": description.pop("validation"),
        "threshold": 0.5,
        "instances": "the engine's split (watershed) of the thresholded output",
        **{k: round(v, 4) for k, v in result.best.items()},
    }
    training = {
        "source": "python -m ml_service.train " + " ".join(run["argv"]),
        **description,
        "init": run["init"],
        "steps": cfg.steps,
        "steps_done": result.steps_done,
        "batch_size": cfg.batch_size,
        "crop": cfg.crop,
        "lr": cfg.lr,
        "loss": "BCE + soft Dice; target: foreground with a 2-px gap between touching objects",
        "optimizer": "AdamW, warm-up then cosine",
        "augmentation": AUGMENTATION,
        "device": run["device"],
        "minutes": round(result.seconds / 60, 1),
        "cpu_minutes": round(result.cpu_seconds / 60, 1),
        "history": [{k: round(v, 4) for k, v in h.items()} for h in result.history],
    }
    extra = {"train_diameter_px": round(data.train_diameter_px(), 1)}
    return save_weights(model, spec, out, training=training, validation=validation, extra=extra)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml_service.train",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--model", choices=MODEL_NAMES, required=True)
    add("--variant", choices=VARIANTS, default="small")
    add("--data", type=Path, help="folder of images and NAME_masks label images")
    add(
        "--init",
        default=None,
        help="'scratch', or a weights folder to fine-tune from "
        "(default: scratch for synthetic data, the demo weights with --data)",
    )
    add("--out", type=Path, default=None, help="where the weights go (see above)")
    add("--epochs", type=int, default=40, help="with --data: passes over the training pixels")
    add("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    add("--minutes", type=float, default=None, help="wall-time budget; the schedule fits it")
    add("--batch-size", type=int, default=LoopConfig.batch_size)
    add("--crop", type=int, default=None, help="crop side (default: the model's input size)")
    add("--lr", type=float, default=None, help="default 3e-3 (1e-3 when fine-tuning)")
    add("--eval-every", type=int, default=None, help="steps between validations")
    add("--val-fraction", type=float, default=0.2, help="with --data: share held out")
    add("--train-images", type=int, default=768, help="synthetic: training images")
    add("--val-images", type=int, default=48, help="synthetic: validation images")
    add("--device", default="auto", help=f"{', '.join(DEVICES)} or cuda:N")
    add("--threads", type=int, default=2, help="CPU threads for torch")
    add("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    spec = get_spec(args.model, args.variant)
    crop = args.crop or spec.input_size
    try:
        device = pick_device(args.device)
        if args.data is None:
            data = synthetic_dataset(spec.input_size, args.train_images, args.val_images)
        else:
            data = folder_dataset(args.data, args.val_fraction, args.seed)
    except (DataError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    init = args.init or ("scratch" if args.data is None else str(DEFAULT_WEIGHTS_DIR))
    model, init_note = initial_model(spec, init)
    pixels = sum(image.size for image in data.train_images)
    per_epoch = max(1, math.ceil(pixels / (args.batch_size * crop * crop)))
    steps = args.steps or (args.epochs * per_epoch if args.data is not None else 600)
    cfg = LoopConfig(
        steps=steps,
        batch_size=args.batch_size,
        crop=crop,
        lr=args.lr or (3e-3 if init == "scratch" else 1e-3),
        eval_every=args.eval_every or (per_epoch if args.data is not None else 100),
        max_minutes=args.minutes,
        seed=args.seed,
    )
    log.info(
        "%s on %s: %d training, %d validation images, %d steps",
        spec.key,
        device,
        len(data.train_images),
        len(data.val_images),
        cfg.steps,
    )
    targets = [separated_foreground(labels) for labels in data.train_labels]
    result = fit(
        model, data.train_images, targets, data.val_images, data.val_labels, cfg, device, spec.key
    )
    out = args.out or (DEFAULT_WEIGHTS_DIR if args.data is None else DEFAULT_DATA_OUT)
    run = {"argv": argv, "init": init_note, "device": str(device)}
    paths = write_weights(model.cpu(), spec, out, data, cfg, result, run)
    log.info("saved %s (validation %s)", paths.tensors, result.best)


if __name__ == "__main__":
    main()
