"""The training loop shared by every data source: augmented crops, BCE + Dice, AdamW with a
cosine schedule, validation (instance AP at IoU 0.5 and pixel IoU) every ``eval_every`` steps,
and the best checkpoint kept in memory."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ml_service.imaging.instances import split_instances
from ml_service.imaging.matching import average_precision
from ml_service.imaging.preprocess import PAD_VALUE
from ml_service.training.augment import random_batch
from ml_service.training.evaluation import iou

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
"""What ``--device`` accepts (``cuda:N`` too)."""


@dataclass(frozen=True)
class LoopConfig:
    """Hyper-parameters of :func:`fit`."""

    steps: int = 600
    batch_size: int = 8
    crop: int = 256
    lr: float = 3e-3
    eval_every: int = 100
    max_minutes: float | None = None
    seed: int = 0


@dataclass
class FitResult:
    """The best checkpoint (by validation AP50 + IoU) and what happened."""

    state: dict[str, torch.Tensor]
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps_done: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available here")
    return device


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits plus soft Dice over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


@torch.inference_mode()
def predict_mask(model: nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Foreground (probability > 0.5) of one ``(H, W)`` normalised image, padded right/bottom
    to a multiple of 32 for the model and cropped back."""
    h, w = image.shape
    ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
    padded = np.full((ph, pw), PAD_VALUE, np.float32)
    padded[:h, :w] = image
    x = torch.from_numpy(padded)[None, None].to(device)
    prob = torch.sigmoid(model(x))[0, 0, :h, :w]
    return np.asarray((prob > 0.5).cpu().numpy())


def validate(
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    device: torch.device,
) -> dict[str, float]:
    """Mean instance AP at IoU 0.5 (objects: the engine's split of the thresholded output,
    :func:`ml_service.imaging.instances.split_instances`) and mean pixel IoU over the
    validation images."""
    was_training = model.training
    model.eval()
    aps, ious = [], []
    for image, lab in zip(images, labels, strict=True):
        mask = predict_mask(model, image, device)
        aps.append(average_precision(lab, split_instances(mask), 0.5))
        ious.append(iou(mask, lab > 0))
    model.train(was_training)
    return {"ap50": float(np.mean(aps)), "iou": float(np.mean(ious))}


def _progress(step: int, cfg: LoopConfig, elapsed_s: float) -> float:
    """Share of the run done: by steps, or by wall time when a budget is set."""
    by_steps = step / cfg.steps
    if not cfg.max_minutes:
        return by_steps
    return max(by_steps, elapsed_s / (cfg.max_minutes * 60))


def fit(
    model: nn.Module,
    train_images: list[np.ndarray],
    train_targets: list[np.ndarray],
    val_images: Sequence[np.ndarray],
    val_labels: Sequence[np.ndarray],
    cfg: LoopConfig,
    device: torch.device,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place; return the best validation checkpoint (on the CPU).

    The learning rate warms up over the first 5 % of the steps, then follows a cosine over the
    run's progress: the larger of the share of ``cfg.steps`` done and the share of
    ``cfg.max_minutes`` spent, so a time budget ends the run with a low learning rate whatever
    the machine's speed. The checkpoint kept is the best one validated.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    warmup = max(1, cfg.steps // 20)
    result = FitResult(state={}, best={"ap50": -1.0, "iou": -1.0})
    started, cpu_started = time.monotonic(), time.process_time()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, unit="step")
    for step in bar:
        progress = _progress(step - 1, cfg, time.monotonic() - started)
        for group in opt.param_groups:
            group["lr"] = (
                cfg.lr * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
            )
        xb, yb = random_batch(rng, train_images, train_targets, cfg.batch_size, cfg.crop)
        loss = dice_bce_loss(
            model(torch.from_numpy(xb).to(device)), torch.from_numpy(yb).to(device)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out_of_time = step < cfg.steps and _progress(step, cfg, time.monotonic() - started) >= 1

        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            scores = validate(model, val_images, val_labels, device)
            epoch = {"step": step, "loss": float(loss.item()), **scores}
            result.history.append(epoch)
            log.info(
                "step %d: loss %.3f, validation AP50 %.3f, IoU %.3f",
                step,
                epoch["loss"],
                scores["ap50"],
                scores["iou"],
            )
            if scores["ap50"] + scores["iou"] > result.best["ap50"] + result.best["iou"]:
                result.best = {**scores, "step": step}
                result.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.3f}", ap50=f"{scores['ap50']:.3f}")
        result.steps_done = step
        if out_of_time:
            log.info("time budget of %s minutes reached at step %d", cfg.max_minutes, step)
            break
    result.seconds = time.monotonic() - started
    result.cpu_seconds = time.process_time() - cpu_started
    model.load_state_dict(result.state)
    return result
