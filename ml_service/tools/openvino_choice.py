"""The OpenVINO runtime's precision for one model on this CPU, chosen by measurement.

Candidates (``ml_service.runtimes.openvino_precision``): ``fp32``; where the CPU has bf16
instructions,
``bf16`` (stem in fp32), ``bf16@S`` for each resolution S the model computes at (bf16 only
there), and unions of those found faster than fp32 (``bf16@4,8``), built greedily from the
fastest single resolution, each kept only while its masks pass. Each candidate runs the
equivalence images as the torch fast-path candidates do (``ml_service.tools.fastpath_choice``): its
masks through the engine's CPU stages against eager torch fp32's (lowest per-image IoU; < 0.99
rejects it); then every candidate's latency on the probe batch, interleaved. The fastest not
rejected wins, ties (within 3%) going to the earlier (fp32 first). The result is recorded like
torch's fast path (``FastPathRecord``, in the model's ``…:openvino`` profile), so
``python -m ml_service.tools.profile`` prints both the same way.

Why resolutions: hrnet/small's bf16 fails the gate with only its stem in fp32 (0.987), but bf16
at 1/4 alone, where most of its time goes, passes (0.992) and is faster than the stem rule
(docs/benchmarks.md, "OpenVINO: bf16 by resolution").
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ml_service.profiles import FastPathCandidate, FastPathRecord
from ml_service.runtimes.openvino import OpenVinoRuntime, native_bf16
from ml_service.runtimes.openvino_precision import BF16_AT, parse_precision, precision_at
from ml_service.runtimes.torch import TorchRuntime
from ml_service.serving.measure import measure_peak, median_latencies_s
from ml_service.tools.fastpath_choice import (
    MIN_MASK_IOU,
    equivalence_images,
    fastest_candidate,
    foreground_masks,
    min_mask_iou,
    probe_batch,
)
from models.registry import ModelSpec

log = logging.getLogger(__name__)


def candidate_precisions(strides: Sequence[int]) -> tuple[str, ...]:
    """fp32, and where the CPU has bf16: the stem rule and bf16 at each of ``strides``."""
    if not native_bf16():
        return ("fp32",)
    return ("fp32", "bf16", *(precision_at([s]) for s in strides))


class _Candidates:
    """Compiled candidates and their mask scores against the reference."""

    def __init__(
        self,
        runtime: OpenVinoRuntime,
        images: Sequence[np.ndarray],
        reference: Sequence[np.ndarray],
        batch_size: int,
    ) -> None:
        self.runtime, self.images, self.reference = runtime, images, reference
        self.batch_size = batch_size
        self.runtimes: dict[str, OpenVinoRuntime] = {}
        self.scores: dict[str, float] = {}

    def add(self, precision: str) -> bool:
        """Compile and score ``precision``; whether its masks pass."""
        if precision not in self.runtimes:
            candidate = copy.copy(self.runtime)  # shares the export; compiles its own model
            candidate.configure(precision)
            self.runtimes[precision] = candidate
            masks = foreground_masks(
                candidate, self.images, self.runtime.input_size, self.batch_size
            )
            self.scores[precision] = min_mask_iou(masks, self.reference)
        return self.passes(precision)

    def passes(self, precision: str) -> bool:
        return self.scores[precision] >= MIN_MASK_IOU

    def latencies_s(
        self, precisions: Sequence[str], x: np.ndarray, repeats: int
    ) -> dict[str, float]:
        thresholds = np.full(len(x), 0.5, np.float32)
        runs = {p: functools.partial(self.runtimes[p].run, x, thresholds) for p in precisions}
        return median_latencies_s(runs, torch.device("cpu"), repeats)


def _add_unions(found: _Candidates, x: np.ndarray, repeats: int) -> None:
    """Greedy unions of the passing single resolutions that beat fp32, fastest first."""
    singles = [p for p in found.runtimes if p.startswith(BF16_AT) and found.passes(p)]
    if len(singles) < 2:
        return
    quick = found.latencies_s(["fp32", *singles], x, max(1, repeats // 3))
    faster = sorted((p for p in singles if quick[p] < quick["fp32"]), key=quick.__getitem__)
    grow_union(faster, found.add)


def grow_union(singles: Sequence[str], passes: Callable[[str], bool]) -> list[str]:
    """Unions of single-resolution precisions (``bf16@S``, in the order given: fastest first),
    each single added to the union so far and kept only while ``passes`` accepts the result;
    returns the unions tried, in order."""
    strides: list[int] = []
    tried = []
    for single in singles:
        trial = [*strides, *(parse_precision(single)[1] or ())]
        if strides:
            tried.append(precision_at(trial))
            if not passes(tried[-1]):
                continue
        strides = trial
    return tried


def choose_openvino_precision(
    module: nn.Module,
    spec: ModelSpec,
    runtime: OpenVinoRuntime,
    *,
    batch_size: int,
    repeats: int,
) -> tuple[str, FastPathRecord]:
    """Measure ``runtime`` in each candidate precision and leave it compiled for the choice."""
    device = torch.device("cpu")
    x = probe_batch(spec, batch_size)
    images = equivalence_images()
    reference = foreground_masks(
        TorchRuntime(copy.deepcopy(module), device), images, spec.input_size, batch_size
    )
    found = _Candidates(runtime, images, reference, batch_size)
    for precision in candidate_precisions(runtime.activation_strides()):
        found.add(precision)
    _add_unions(found, x, repeats)
    precisions = list(found.runtimes)
    thresholds = np.full(batch_size, 0.5, np.float32)
    peaks = {
        p: measure_peak(functools.partial(b.run, x, thresholds), device, False).peak_bytes
        for p, b in found.runtimes.items()
    }
    latencies = found.latencies_s(precisions, x, repeats)
    candidates = []
    for precision in precisions:
        score = found.scores[precision]
        rejected = (
            f"masks differ from fp32 (IoU {score:.4f} < {MIN_MASK_IOU})"
            if score < MIN_MASK_IOU
            else ""
        )
        candidates.append(
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
            candidates[-1].latency_ms,
            score,
            f" (rejected: {rejected})" if rejected else "",
        )
    best = fastest_candidate(candidates)
    chosen = best.precision if best is not None else "fp32"
    runtime.configure(chosen)
    no_bf16 = ("bf16 not measured: this CPU has no bf16 instructions",)
    notes = () if "bf16" in found.scores else no_bf16
    record = FastPathRecord(
        {"precision": chosen, "channels_last": False, "compile": "off"}, tuple(candidates), notes
    )
    log.info("%s on cpu: openvino %s", spec.key, chosen)
    return chosen, record
