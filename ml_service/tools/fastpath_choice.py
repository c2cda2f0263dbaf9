"""Measuring the fast-path candidates of one model on one device, and choosing one.

Every candidate configuration of the device (``ml_service.runtimes.torch.fastpath.candidates``: the
precisions
worth measuring there × channels_last, and compile modes where asked) runs the same probe
batch: held-out synthetic images (``ml_service.training.synthetic``), preprocessed as the engine
does.
For each: the first run's time (compilation, when compiled), peak memory
(``ml_service.serving.measure``), the median latency of interleaved runs (every candidate once per
round, so a shared machine slows them alike), and the lowest per-image IoU of its masks
(threshold 0.5, through the engine's CPU stages) against fp32's on the equivalence images:
held-out synthetic images and scikit-image's real ``cell`` and IHC images
(``equivalence_images``, those of the tests). A candidate whose masks disagree with fp32 on any
of them (IoU < 0.99) or that fails to run is rejected; of the others the
fastest wins, ties (within 3%) going to the earlier, simpler one (fp32 contiguous first).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ml_service.imaging.preprocess import prepare
from ml_service.profiles import FastPathCandidate, FastPathRecord
from ml_service.runtimes.base import InferenceRuntime
from ml_service.runtimes.torch import TorchRuntime
from ml_service.runtimes.torch.fastpath import FP32, FastPathConfig
from ml_service.serving.cpu_stages import postprocess_outputs
from ml_service.serving.measure import measure_peak, median_latencies_s
from ml_service.training.evaluation import iou, real_sample_images, to_uint8
from ml_service.training.synthetic import KINDS, generate_sample
from models.registry import ModelSpec

log = logging.getLogger(__name__)

MIN_MASK_IOU = 0.99
TIE = 0.97  # within 3% of the fastest counts as a tie


def probe_batch(spec: ModelSpec, n: int, seed: int = 20_000) -> np.ndarray:
    """``(n, 1, S, S)`` float32 model inputs from held-out synthetic images (seed 20000, as in
    the tests), preprocessed as the engine does."""
    rng = np.random.default_rng(seed)
    size = spec.input_size
    items = [
        prepare(generate_sample(rng, size, KINDS[i % len(KINDS)]).image, size, 32)[0][0]
        for i in range(n)
    ]
    return np.stack(items)[:, None].astype(np.float32)


def equivalence_images(synthetic: int = 6, seed: int = 20_000) -> list[np.ndarray]:
    """Held-out synthetic 256-px images (seed 20000) and the real samples as 8-bit."""
    rng = np.random.default_rng(seed)
    images = [generate_sample(rng, 256, KINDS[i % len(KINDS)]).image for i in range(synthetic)]
    return images + [to_uint8(image) for image in real_sample_images().values()]


def foreground_masks(
    runtime: InferenceRuntime, images: Sequence[np.ndarray], size: int, batch: int = 4
) -> list[np.ndarray]:
    """Each image through the engine's preprocessing, ``runtime`` (thresholded at 0.5 on the
    device, ``batch`` inputs at a time) and postprocessing → ``(H, W)`` bool foreground."""
    found = []
    for image in images:
        inputs, restore = prepare(image, size, 32)
        outputs: list[np.ndarray] = []
        for start in range(0, len(inputs), batch):
            chunk = inputs[start : start + batch, None]
            outputs.extend(runtime.run(chunk, np.full(len(chunk), 0.5, np.float32)))
        labels, _, _ = postprocess_outputs(outputs, restore, 0.5, 0)
        found.append(labels > 0)
    return found


def min_mask_iou(masks: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    return min(iou(a, b) for a, b in zip(masks, reference, strict=True))


def measure_candidates(
    module: nn.Module,
    spec: ModelSpec,
    device: torch.device,
    configs: Sequence[FastPathConfig],
    *,
    batch_size: int,
    repeats: int,
) -> list[FastPathCandidate]:
    """Measure each config on a copy of ``module`` (the first one is the reference: fp32)."""
    x = probe_batch(spec, batch_size)
    thresholds = np.full(batch_size, 0.5, np.float32)
    images = equivalence_images()
    runtimes: dict[FastPathConfig, TorchRuntime] = {}
    masks: dict[FastPathConfig, list[np.ndarray]] = {}
    first_s: dict[FastPathConfig, float] = {}
    failed: dict[FastPathConfig, str] = {}
    for config in configs:
        try:
            runtime = TorchRuntime(copy.deepcopy(module), device, config)
            start = time.perf_counter()
            runtime.run(x, thresholds)  # compiles, when compiled
            first_s[config] = time.perf_counter() - start
            masks[config] = foreground_masks(runtime, images, spec.input_size, batch_size)
            runtimes[config] = runtime
        except Exception as exc:  # a candidate that cannot run here is rejected, not fatal
            log.warning("%s %s: does not run (%s)", spec.key, config.label, exc)
            failed[config] = f"failed: {exc}"[:200]
    runs = {c.label: functools.partial(b.run, x, thresholds) for c, b in runtimes.items()}
    peaks = {key: measure_peak(run, device).peak_bytes for key, run in runs.items()}
    latencies = median_latencies_s(runs, device, repeats) if runs else {}
    reference = masks.get(configs[0])
    found = []
    for config in configs:
        if config in failed:
            found.append(_candidate(config, batch_size, 0.0, 0.0, 0.0, 0.0, failed[config]))
            continue
        score = min_mask_iou(masks[config], reference) if reference is not None else 0.0
        rejected = (
            f"masks differ from fp32 (IoU {score:.4f} < {MIN_MASK_IOU})"
            if score < MIN_MASK_IOU
            else ""
        )
        found.append(
            _candidate(
                config,
                batch_size,
                1000 * latencies[config.label],
                peaks[config.label] / 2**20,
                score,
                first_s[config] if config.compile != "off" else 0.0,
                rejected,
            )
        )
        log.info(
            "%s %s batch %d: %.1f ms, peak %.1f MB, mask IoU %.4f%s",
            spec.key,
            config.label,
            batch_size,
            found[-1].latency_ms,
            found[-1].peak_mb,
            score,
            f" (rejected: {rejected})" if rejected else "",
        )
    return found


def _candidate(
    config: FastPathConfig,
    batch_size: int,
    latency_ms: float,
    peak_mb: float,
    mask_iou: float,
    compile_s: float,
    rejected: str,
) -> FastPathCandidate:
    return FastPathCandidate(
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        batch_size=batch_size,
        latency_ms=round(latency_ms, 2),
        peak_mb=round(peak_mb, 1),
        mask_iou=round(mask_iou, 4),
        compile_s=round(compile_s, 1),
        rejected=rejected,
    )


def fastest_candidate(candidates: Sequence[FastPathCandidate]) -> FastPathCandidate | None:
    """The fastest candidate not rejected; ties (within 3%) go to the earlier one."""
    usable = [c for c in candidates if not c.rejected and c.latency_ms > 0]
    if not usable:
        return None
    top = max(c.images_per_s for c in usable)
    return next(c for c in usable if c.images_per_s >= TIE * top)


def choose(candidates: Sequence[FastPathCandidate]) -> FastPathConfig:
    """:func:`fastest_candidate` as a configuration; fp32 if none."""
    best = fastest_candidate(candidates)
    if best is None:
        return FP32
    return FastPathConfig(best.precision, best.channels_last, best.compile)


def choose_fastpath(
    module: nn.Module,
    spec: ModelSpec,
    device: torch.device,
    configs: Sequence[FastPathConfig],
    *,
    batch_size: int,
    repeats: int,
    notes: Sequence[str] = (),
) -> tuple[FastPathConfig, FastPathRecord]:
    """Measure ``configs`` and choose; the record goes into the model's torch profile."""
    found = measure_candidates(
        module, spec, device, configs, batch_size=batch_size, repeats=repeats
    )
    chosen = choose(found)
    log.info("%s on %s: fast path %s", spec.key, device, chosen.label)
    return chosen, FastPathRecord(chosen.to_json(), tuple(found), tuple(notes))
