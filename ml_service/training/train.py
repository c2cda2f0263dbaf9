"""Train a registry model on procedurally generated microscopy images.

    python -m ml_service.training.train --model unet --variant small --steps 600

Images come from ``ml_service.training.synthetic`` (cells, spheroids with holes, rings; uneven
illumination, blur, shot noise, 8/16-bit, both polarities), normalised exactly as the engine
normalises uploads. Training uses random crops with flips; validation uses held-out seeds at
the model's full input size. The best checkpoint (validation IoU) is written as safetensors with
a sidecar recording the recipe and the score.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ml_service.training.evaluation import iou
from ml_service.training.synthetic import make_dataset
from models.registry import MODEL_NAMES, VARIANTS, get_spec
from models.weights import DEFAULT_WEIGHTS_DIR, save_weights

log = logging.getLogger(__name__)

TRAIN_SEED = 1
VALIDATION_SEED = 10_000  # disjoint from the training seeds


@dataclass(frozen=True)
class TrainConfig:
    model: str
    variant: str = "small"
    steps: int = 600
    batch_size: int = 12
    crop: int = 128
    train_images: int = 768
    val_images: int = 48
    lr: float = 3e-3
    eval_every: int = 100
    threads: int = 2
    seed: int = 0


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits plus soft Dice over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def random_batch(
    rng: np.random.Generator, images: np.ndarray, masks: np.ndarray, batch: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops with random flips and 90° rotations, shapes ``(batch, 1, crop, crop)``."""
    n, h, w = images.shape
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(n))
        y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        img = images[i, y0 : y0 + crop, x0 : x0 + crop]
        msk = masks[i, y0 : y0 + crop, x0 : x0 + crop]
        k = int(rng.integers(4))
        img, msk = np.rot90(img, k), np.rot90(msk, k)
        if rng.random() < 0.5:
            img, msk = img[:, ::-1], msk[:, ::-1]
        xs.append(img.copy())
        ys.append(msk.copy())
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]


@torch.inference_mode()
def validate(model: nn.Module, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean per-image IoU and pooled IoU of masks thresholded at 0.5."""
    model.eval()
    scores, preds = [], []
    for start in range(0, len(images), 8):
        x = torch.from_numpy(images[start : start + 8])[:, None]
        pred = (torch.sigmoid(model(x))[:, 0] > 0.5).numpy()
        preds.append(pred)
        scores += [iou(p, m > 0.5) for p, m in zip(pred, masks[start : start + 8], strict=True)]
    model.train()
    pooled = iou(np.concatenate(preds), masks > 0.5)
    return {"iou_mean": float(np.mean(scores)), "iou_pooled": float(pooled)}


def train(cfg: TrainConfig, out_dir: Path = DEFAULT_WEIGHTS_DIR) -> dict[str, float]:
    """Train, keep the best validation checkpoint, save it; returns its validation scores."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    spec = get_spec(cfg.model, cfg.variant)
    size = spec.input_size
    log.info("generating %d training and %d validation images", cfg.train_images, cfg.val_images)
    images, masks = make_dataset(TRAIN_SEED, cfg.train_images, size)
    val_images, val_masks = make_dataset(VALIDATION_SEED, cfg.val_images, size)
    model = spec.build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    best: dict[str, float] = {"iou_mean": -1.0}
    best_state: dict[str, torch.Tensor] = {}
    started = time.monotonic()
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {spec.key}", unit="step")
    for step in bar:
        x, y = random_batch(rng, images, masks, cfg.batch_size, cfg.crop)
        loss = dice_bce_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            scores = validate(model, val_images, val_masks)
            if scores["iou_mean"] > best["iou_mean"]:
                best = {**scores, "step": step}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.3f}", val_iou=f"{scores['iou_mean']:.3f}")
    model.load_state_dict(best_state)
    training = {
        "source": "python -m ml_service.training.train",
        "data": "ml_service.training.synthetic procedural microscopy (cells, spheroids, rings)",
        "train_seed": TRAIN_SEED,
        "train_images": cfg.train_images,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "crop": cfg.crop,
        "lr": cfg.lr,
        "loss": "BCE + soft Dice",
        "optimizer": "AdamW, OneCycle",
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    validation = {
        "data": f"{cfg.val_images} held-out synthetic images, seed {VALIDATION_SEED}, {size}px",
        "threshold": 0.5,
        **{k: round(v, 4) for k, v in best.items()},
    }
    paths = save_weights(model, spec, out_dir, training=training, validation=validation)
    log.info("saved %s (validation %s)", paths.tensors, validation)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES, required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="small")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--crop", type=int, default=TrainConfig.crop)
    parser.add_argument("--train-images", type=int, default=TrainConfig.train_images)
    parser.add_argument("--val-images", type=int, default=TrainConfig.val_images)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(
        model=args.model,
        variant=args.variant,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        train_images=args.train_images,
        val_images=args.val_images,
        lr=args.lr,
        eval_every=args.eval_every,
        threads=args.threads,
    )
    best = train(cfg, args.out)
    logging.getLogger(__name__).info("best validation: %s", best)


if __name__ == "__main__":
    main()
