"""The drawing surface of a synthetic scene and the geometry helpers every object kind uses.

A :class:`Scene` holds an instance-label image (the exact ground truth: the label drawn last at
a pixel owns it) and two noise-free signal layers (stain density, 0 on background): ``signal``
for objects in focus and ``defocused``, which the camera blurs strongly before adding it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Point = tuple[float, float]

_MAX_PLACEMENT_TRIES = 12


@dataclass
class Scene:
    """Mutable drawing surface: ``labels`` (H, W) int32, ``signal``/``defocused`` (H, W) float32."""

    labels: np.ndarray
    signal: np.ndarray
    defocused: np.ndarray
    centers: list[Point]
    radii: list[float]
    next_label: int = 1

    @classmethod
    def empty(cls, size: int) -> Scene:
        return cls(
            labels=np.zeros((size, size), np.int32),
            signal=np.zeros((size, size), np.float32),
            defocused=np.zeros((size, size), np.float32),
            centers=[],
            radii=[],
        )

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def new_label(self, center: Point, radius: float) -> int:
        self.centers.append(center)
        self.radii.append(radius)
        label = self.next_label
        self.next_label += 1
        return label

    def clearance(self, center: Point, radius: float) -> float:
        """Smallest ``distance - (r_i + radius)`` to the objects placed so far (inf if none)."""
        if not self.centers:
            return math.inf
        c = np.asarray(self.centers)
        d = np.hypot(c[:, 0] - center[0], c[:, 1] - center[1])
        return float(np.min(d - np.asarray(self.radii) - radius))

    def relabelled(self) -> np.ndarray:
        """The labels renumbered so the labels still present are ``1..N`` (H, W) int32."""
        present = np.bincount(self.labels.ravel(), minlength=self.next_label) > 0
        present[0] = True
        lut = (np.cumsum(present) - 1).astype(np.int32)
        return lut[self.labels]


def ellipse(img: np.ndarray, center: Point, axes: Point, angle: float, value: float) -> None:
    """Fill an ellipse in place (OpenCV, integer geometry; axes at least 1 px)."""
    cv2.ellipse(
        img,
        (round(center[0]), round(center[1])),
        (max(1, round(axes[0])), max(1, round(axes[1]))),
        angle,
        0,
        360,
        value,
        thickness=-1,
    )


def blob_polygon(
    rng: np.random.Generator, center: Point, radius: float, roughness: float, n_points: int = 96
) -> np.ndarray:
    """Closed outline of a perturbed circle: ``(n_points, 2)`` int32 (x, y) vertices.

    The radius is modulated by low harmonics (k = 2..7, amplitude ~``roughness``) plus a
    little per-vertex jitter, giving the irregular outline of a spheroid or organoid; a
    ``roughness`` of 0 gives a circle.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 8):
        r += rng.uniform(0.0, roughness) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r += rng.normal(0.0, roughness * 0.08, n_points)
    r = radius * np.clip(r, 0.55, 1.6)
    pts = np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], axis=1)
    return np.rint(pts).astype(np.int32)


def place(
    rng: np.random.Generator,
    scene: Scene,
    radius: float,
    min_clearance: float,
    margin: float = 0.0,
) -> Point | None:
    """A random centre whose clearance to placed objects is at least ``min_clearance``."""
    lo, hi = margin, scene.size - margin
    for _ in range(_MAX_PLACEMENT_TRIES):
        c = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        if scene.clearance(c, radius) >= min_clearance:
            return c
    return None


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """``(size, size)`` float32 smooth random field, roughly zero mean, unit std.

    A coarse Gaussian grid (one value per ``scale`` px) upsampled bicubically.
    """
    n = max(2, round(size / scale))
    coarse = rng.standard_normal((n, n), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
