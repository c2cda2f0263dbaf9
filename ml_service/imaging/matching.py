"""Instance matching and the object-level accuracy scores built on it.

- :func:`iou_matrix` - IoU of every ground-truth object with every predicted object;
- :func:`match_instances` - one-to-one matching at an IoU threshold (the Hungarian assignment
  over the pairs at or above the threshold, as StarDist's ``matching`` does; for thresholds
  ``>= 0.5`` a pair above the threshold is unique anyway);
- :func:`average_precision` - ``TP / (TP + FP + FN)`` at a threshold, the score of the 2018
  Data Science Bowl (averaged there over thresholds 0.5..0.95), and the mean IoU of the matched
  pairs.

All functions take ``(H, W)`` integer label images, 0 background, any label values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as ``0..n`` consecutive int64 (0 stays background) and the object count ``n``."""
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if values[0] != 0:  # no background pixel at all
        return inverse + 1, len(values)
    return inverse, len(values) - 1


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of each ground-truth object (rows) with each predicted object (columns).

    Args:
        truth: ``(H, W)`` integer labels, 0 background.
        pred: ``(H, W)`` integer labels of the same shape.

    Returns:
        ``(n_truth, n_pred)`` float64 IoUs, objects in increasing label order.

    Raises:
        ValueError: shapes differ, or an image is not integer-valued.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch: truth {truth.shape} vs pred {pred.shape}")
    if truth.dtype.kind not in "uib" or pred.dtype.kind not in "uib":
        raise ValueError("label images must be integer arrays")
    t, n_t = _relabel(truth)
    p, n_p = _relabel(pred)
    overlap = np.bincount((t * (n_p + 1) + p).ravel(), minlength=(n_t + 1) * (n_p + 1)).reshape(
        n_t + 1, n_p + 1
    )
    inter = overlap[1:, 1:].astype(np.float64)
    area_t = overlap[1:, :].sum(axis=1, keepdims=True)
    area_p = overlap[:, 1:].sum(axis=0, keepdims=True)
    union = area_t + area_p - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Matching:
    """Result of :func:`match_instances` at one IoU threshold.

    Attributes:
        threshold: IoU a pair needs to count as a match.
        tp: matched pairs; fp: predicted objects left unmatched; fn: true objects left unmatched.
        matched_ious: IoU of each matched pair.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    matched_ious: tuple[float, ...]

    @property
    def ap(self) -> float:
        """``TP / (TP + FP + FN)``; 1.0 when both images are empty."""
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else 1.0

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (0.0 when none)."""
        return float(np.mean(self.matched_ious)) if self.matched_ious else 0.0


def match_instances(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> Matching:
    """One-to-one matching of predicted to true objects at IoU ``>= threshold``.

    Args:
        truth: ``(H, W)`` integer ground-truth labels, 0 background.
        pred: ``(H, W)`` integer predicted labels.
        threshold: IoU threshold in ``(0, 1]``.

    Returns:
        The :class:`Matching` (the assignment maximising the summed IoU of eligible pairs).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    ious = iou_matrix(truth, pred)
    n_t, n_p = ious.shape
    if n_t == 0 or n_p == 0:
        return Matching(threshold, 0, n_p, n_t, ())
    eligible = ious >= threshold
    rows, cols = linear_sum_assignment(np.where(eligible, -ious, 0.0))
    keep = eligible[rows, cols]
    matched = tuple(float(v) for v in ious[rows[keep], cols[keep]])
    tp = len(matched)
    return Matching(threshold, tp, n_p - tp, n_t - tp, matched)


def average_precision(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """``TP / (TP + FP + FN)`` after :func:`match_instances` at ``threshold``."""
    return match_instances(truth, pred, threshold).ap
