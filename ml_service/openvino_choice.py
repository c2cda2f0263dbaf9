"""The OpenVINO backend's precision for one model on this CPU, chosen by measurement.

Candidates: ``fp32``, and ``bf16`` (stem in fp32, ``ml_service.openvino_precision``) where the
CPU has bf16 instructions. Each runs the probe batch and the equivalence images as the torch
fast-path candidates do (``ml_service.fastpath_choice``): its masks through the engine's
CPU stages against eager torch fp32's (lowest per-image IoU; < 0.99 rejects it), its latency
interleaved with the others'. The fastest not rejected wins, ties (within 3%) going to fp32.
The result is recorded like torch's fast path (``FastPathRecord``, in the model's
``…:openvino`` profile), so ``python -m ml_service.profile`` prints both the same way.
"""

from __future__ import annotations

import copy
import functools
import logging

import numpy as np
import torch
from torch import nn

from ml_service.backends import TorchBackend
from ml_service.fastpath_choice import (
    MIN_MASK_IOU,
    choose,
    equivalence_images,
    foreground_masks,
    min_mask_iou,
    probe_batch,
)
from ml_service.measure import measure_peak, median_latencies_s
from ml_service.openvino_backend import OpenVinoBackend, native_bf16
from ml_service.profiles import FastPathCandidate, FastPathRecord
from models.registry import ModelSpec

log = logging.getLogger(__name__)


def candidate_precisions() -> tuple[str, ...]:
    return ("fp32", "bf16") if native_bf16() else ("fp32",)


def choose_openvino_precision(
    module: nn.Module,
    spec: ModelSpec,
    backend: OpenVinoBackend,
    *,
    batch_size: int,
    repeats: int,
) -> tuple[str, FastPathRecord]:
    """Measure ``backend`` in each candidate precision and leave it compiled for the choice."""
    device = torch.device("cpu")
    x = probe_batch(spec, batch_size)
    thresholds = np.full(batch_size, 0.5, np.float32)
    images = equivalence_images()
    reference = foreground_masks(
        TorchBackend(copy.deepcopy(module), device), images, spec.input_size, batch_size
    )
    backends: dict[str, OpenVinoBackend] = {}
    scores: dict[str, float] = {}
    for precision in candidate_precisions():
        candidate = copy.copy(backend)  # shares the export; compiles its own model
        candidate.configure(precision)
        backends[precision] = candidate
        scores[precision] = min_mask_iou(
            foreground_masks(candidate, images, spec.input_size, batch_size), reference
        )
    runs = {p: functools.partial(b.run, x, thresholds) for p, b in backends.items()}
    peaks = {p: measure_peak(run, device, "openvino").peak_bytes for p, run in runs.items()}
    latencies = median_latencies_s(runs, device, repeats)
    found = []
    for precision, score in scores.items():
        rejected = (
            f"masks differ from fp32 (IoU {score:.4f} < {MIN_MASK_IOU})"
            if score < MIN_MASK_IOU
            else ""
        )
        found.append(
            FastPathCandidate(
                precision=precision,
                channels_last=False,
                compile="off",
                batch_size=batch_size,
                latency_ms=round(1000 * latencies[precision], 2),
                peak_mb=round(peaks[precision] / 2**20, 1),
                mask_iou=round(score, 4),
                rejected=rejected,
            )
        )
        log.info(
            "%s openvino %s batch %d: %.1f ms, mask IoU %.4f%s",
            spec.key,
            precision,
            batch_size,
            found[-1].latency_ms,
            score,
            f" (rejected: {rejected})" if rejected else "",
        )
    chosen = choose(found).precision
    backend.configure(chosen)
    notes = () if "bf16" in scores else ("bf16 not measured: this CPU has no bf16 instructions",)
    record = FastPathRecord(
        {"precision": chosen, "channels_last": False, "compile": "off"}, tuple(found), notes
    )
    log.info("%s on cpu: openvino %s", spec.key, chosen)
    return chosen, record
