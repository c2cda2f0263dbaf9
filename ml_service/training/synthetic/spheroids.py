"""Large objects: spheroids with a necrotic core, and very large spheroids or organoids that
may run past the image border, with a flat, textured or hollow inside.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ml_service.training.synthetic.cells import draw_cell
from ml_service.training.synthetic.scene import Scene, blob_polygon, place, smooth_noise

LARGE_MAX_RADIUS = 150.0
"""Largest radius of a ``"large"`` object, in pixels (fewer on small images)."""


def draw_spheroids(rng: np.random.Generator, scene: Scene, polarity: str) -> None:
    """1-4 irregular blobs with a bright rim and a dim or hollow (background) necrotic core."""
    size = scene.size
    n = int(rng.integers(1, 5))
    r_lo = min(40.0, 0.15 * size)
    r_hi = max(r_lo, min(100.0, 0.45 * size / math.sqrt(n)))
    for _ in range(n):
        r0 = float(rng.uniform(r_lo, r_hi))
        center = place(rng, scene, r0, min_clearance=-0.15 * r0, margin=0.15 * size)
        if center is None:
            continue
        label = scene.new_label(center, r0)
        base = float(rng.uniform(0.55, 1.0))
        outline = blob_polygon(rng, center, r0, roughness=rng.uniform(0.08, 0.25))
        cv2.fillPoly(scene.labels, [outline], label)
        cv2.fillPoly(scene.signal, [outline], base)
        inner = np.rint((outline - center) * rng.uniform(0.75, 0.9) + center).astype(np.int32)
        cv2.fillPoly(scene.signal, [inner], base * rng.uniform(0.75, 0.92))
        core_center = (center[0] + rng.normal(0, 0.08 * r0), center[1] + rng.normal(0, 0.08 * r0))
        core = blob_polygon(rng, core_center, r0 * rng.uniform(0.22, 0.45), roughness=0.2)
        if rng.random() < 0.55:
            cv2.fillPoly(scene.labels, [core], 0)
            cv2.fillPoly(scene.signal, [core], 0.0)
        else:
            dense = polarity == "brightfield"
            factor = rng.uniform(1.3, 1.7) if dense else rng.uniform(0.2, 0.5)
            cv2.fillPoly(scene.signal, [core], base * factor)


def _inside(rng: np.random.Generator, scene: Scene, region: np.ndarray, base: float) -> None:
    """Fill one object's signal: flat (50 %), textured (35 %: cell-sized mottling of up to
    +-45 %) or with a bright rim around a dimmer inside (15 %)."""
    u = rng.random()
    if u < 0.5:
        scene.signal[region] = base
    elif u < 0.85:
        texture = smooth_noise(rng, scene.size, float(rng.uniform(3.0, 12.0)))
        gain = np.float32(rng.uniform(0.15, 0.45))
        scene.signal[region] = base * np.clip(1.0 + gain * texture[region], 0.3, 1.8)
    else:
        rim = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=6) == 0
        scene.signal[region] = base * rng.uniform(0.6, 0.85)
        scene.signal[region & rim] = base


def draw_large(rng: np.random.Generator, scene: Scene) -> None:
    """1-2 very large objects (radius up to :data:`LARGE_MAX_RADIUS`, at most 0.6 of the image
    side) that may extend past the border, so a crop can lie wholly inside one; 20 % have a
    hole. Some small cells are scattered around them."""
    size = scene.size
    r_hi = min(LARGE_MAX_RADIUS, 0.6 * size)
    r_lo = min(0.6 * r_hi, max(20.0, 0.15 * size))
    for _ in range(int(rng.integers(1, 3))):
        r0 = float(rng.uniform(r_lo, r_hi))
        center = place(rng, scene, r0, min_clearance=2.0, margin=0.2 * size)
        if center is None:
            continue
        label = scene.new_label(center, r0)
        roughness = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.02, 0.15))
        outline = blob_polygon(rng, center, r0, roughness=roughness, n_points=192)
        region = np.zeros((size, size), np.uint8)
        cv2.fillPoly(region, [outline], 1)
        if rng.random() < 0.2:
            hole = blob_polygon(rng, center, r0 * rng.uniform(0.2, 0.5), roughness=0.1)
            cv2.fillPoly(region, [hole], 0)
        inside = region.astype(bool)
        scene.labels[inside] = label
        _inside(rng, scene, inside, float(rng.uniform(0.4, 1.0)))
    for _ in range(round(rng.uniform(0, 10) * (size / 256) ** 2)):
        radius = float(rng.uniform(5, 14))
        center = place(rng, scene, radius, min_clearance=2.0)
        if center is not None:
            draw_cell(rng, scene, center, radius)
