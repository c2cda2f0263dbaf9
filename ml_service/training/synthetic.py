"""Procedural microscopy-like images with exact ground truth, for training and validation.

A sample is built in two stages:

1. **Scene**: objects are drawn into an instance-label image and a noise-free *signal* image
   (stain density, 0 on background) with OpenCV primitives. Three kinds exist:

   - ``"cells"``: many small round/elliptical cells (radius 6-20 px), some touching, some
     overlapping, with a nucleus-like brighter or darker region and small spots inside.
   - ``"spheroids"``: 1-4 large blobs (radius 40-100 px, fewer/smaller on small images) with a
     perturbed outline, a brighter proliferating rim and a necrotic core that is either dim
     tissue or a real hole (background inside: ``mask`` is False there).
   - ``"rings"``: annulus-shaped objects (the mask has a hole) mixed with filled cells.

2. **Imaging**: a camera model turns the signal into counts: both polarities (fluorescence,
   bright on dark, or brightfield, Beer-Lambert absorption: dark on bright, ~30 %), uneven
   illumination (linear gradient times vignetting), Gaussian optical blur (sigma 0-2 px),
   Poisson shot noise at a random photon budget, Gaussian read noise, a camera offset and a
   random 8-bit or 12/14/16-bit sub-range, as real cameras produce.

Everything is drawn from the ``numpy.random.Generator`` the caller passes, so a seed fixes a
sample. One 256 x 256 sample takes a few milliseconds on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ml_service.imaging.preprocess import normalize_percentile

KINDS: tuple[str, ...] = ("cells", "spheroids", "rings")
"""Scene kinds :func:`generate_sample` can draw."""

POLARITIES: tuple[str, ...] = ("fluorescence", "brightfield")
"""Imaging modes: bright objects on dark, or dark (absorbing) objects on bright."""

BRIGHTFIELD_FRACTION = 0.3
"""Share of samples rendered as brightfield."""

UINT16_FRACTION = 0.5
"""Share of samples stored as 16-bit images (the rest are 8-bit)."""

MIN_SIZE = 48
"""Smallest image side :func:`generate_sample` accepts, in pixels."""

_MAX_PLACEMENT_TRIES = 12


@dataclass(frozen=True)
class Sample:
    """One synthetic image and its ground truth.

    Attributes:
        image: ``(H, W)`` uint8 or uint16 raw camera image.
        mask: ``(H, W)`` bool foreground (True on objects, False on background and in holes).
        labels: ``(H, W)`` int32 instance labels, 0 background, objects ``1..N`` sequential.
        kind: the scene kind, one of :data:`KINDS`.
        polarity: the imaging mode, one of :data:`POLARITIES`.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    kind: str
    polarity: str


@dataclass
class _Scene:
    """Mutable drawing surface: ``labels`` (H, W) int32 and ``signal`` (H, W) float32."""

    labels: np.ndarray
    signal: np.ndarray
    centers: list[tuple[float, float]]
    radii: list[float]
    next_label: int = 1

    @classmethod
    def empty(cls, size: int) -> _Scene:
        return cls(
            labels=np.zeros((size, size), np.int32),
            signal=np.zeros((size, size), np.float32),
            centers=[],
            radii=[],
        )

    def new_label(self, center: tuple[float, float], radius: float) -> int:
        self.centers.append(center)
        self.radii.append(radius)
        label = self.next_label
        self.next_label += 1
        return label

    def clearance(self, center: tuple[float, float], radius: float) -> float:
        """Smallest ``distance - (r_i + radius)`` to the objects placed so far (inf if none)."""
        if not self.centers:
            return math.inf
        c = np.asarray(self.centers)
        d = np.hypot(c[:, 0] - center[0], c[:, 1] - center[1])
        return float(np.min(d - np.asarray(self.radii) - radius))


def _ellipse(
    img: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    value: float,
) -> None:
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


def _blob_polygon(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: float,
    roughness: float,
    n_points: int = 96,
) -> np.ndarray:
    """Closed outline of a perturbed circle: ``(n_points, 2)`` int32 (x, y) vertices.

    The radius is modulated by low harmonics (k = 2..7, amplitude ~``roughness``) plus a
    little per-vertex jitter, giving the irregular outline of a spheroid or organoid.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 8):
        r += rng.uniform(0.0, roughness) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r += rng.normal(0.0, roughness * 0.08, n_points)
    r = radius * np.clip(r, 0.55, 1.6)
    pts = np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], axis=1)
    return np.rint(pts).astype(np.int32)


def _place(
    rng: np.random.Generator,
    scene: _Scene,
    size: int,
    radius: float,
    min_clearance: float,
    margin: float = 0.0,
) -> tuple[float, float] | None:
    """A random centre whose clearance to placed objects is at least ``min_clearance``."""
    lo, hi = margin, size - margin
    for _ in range(_MAX_PLACEMENT_TRIES):
        c = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        if scene.clearance(c, radius) >= min_clearance:
            return c
    return None


def _draw_cell(
    rng: np.random.Generator, scene: _Scene, center: tuple[float, float], radius: float
) -> None:
    """One filled elliptical cell with a nucleus-like region and a few spots inside."""
    label = scene.new_label(center, radius)
    axes = (radius, radius * rng.uniform(0.65, 1.0))
    angle = float(rng.uniform(0, 180))
    base = float(rng.uniform(0.45, 1.0))
    _ellipse(scene.labels, center, axes, angle, label)
    _ellipse(scene.signal, center, axes, angle, base)
    if rng.random() < 0.8:
        off = rng.normal(0.0, 0.15 * radius, 2)
        frac = rng.uniform(0.35, 0.6)
        factor = rng.uniform(1.25, 1.6) if rng.random() < 0.6 else rng.uniform(0.5, 0.75)
        nucleus_axes = (axes[0] * frac, axes[1] * frac * rng.uniform(0.8, 1.0))
        _ellipse(
            scene.signal,
            (center[0] + off[0], center[1] + off[1]),
            nucleus_axes,
            float(rng.uniform(0, 180)),
            base * factor,
        )
    for _ in range(int(rng.integers(0, 4))):
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * axes[1]
        spot = (center[0] + dist * math.cos(ang), center[1] + dist * math.sin(ang))
        r_spot = rng.uniform(1.0, max(1.5, radius / 6))
        _ellipse(scene.signal, spot, (r_spot, r_spot), 0.0, base * rng.uniform(0.6, 1.5))


def _draw_cells(rng: np.random.Generator, scene: _Scene, size: int) -> None:
    """Many small cells: mostly apart, ~20 % touching a neighbour, ~10 % overlapping one."""
    n = round(rng.uniform(12, 45) * (size / 256) ** 2)
    for _ in range(max(n, 3)):
        radius = float(rng.uniform(6, 20))
        u = rng.random()
        center: tuple[float, float] | None
        if scene.centers and u < 0.3:
            i = int(rng.integers(len(scene.centers)))
            # touching: centre distance ~ sum of radii; overlapping: clearly less
            f = rng.uniform(0.92, 1.0) if u < 0.2 else rng.uniform(0.55, 0.8)
            ang = rng.uniform(0, 2 * np.pi)
            d = f * (scene.radii[i] + radius)
            cx, cy = scene.centers[i]
            center = (cx + d * math.cos(ang), cy + d * math.sin(ang))
        else:
            center = _place(rng, scene, size, radius, min_clearance=2.0)
        if center is not None:
            _draw_cell(rng, scene, center, radius)


def _draw_spheroids(rng: np.random.Generator, scene: _Scene, size: int, polarity: str) -> None:
    """1-4 irregular blobs with a bright rim and a dim or hollow (background) necrotic core."""
    n = int(rng.integers(1, 5))
    r_lo = min(40.0, 0.15 * size)
    r_hi = max(r_lo, min(100.0, 0.45 * size / math.sqrt(n)))
    for _ in range(n):
        r0 = float(rng.uniform(r_lo, r_hi))
        center = _place(rng, scene, size, r0, min_clearance=-0.15 * r0, margin=0.15 * size)
        if center is None:
            continue
        label = scene.new_label(center, r0)
        base = float(rng.uniform(0.55, 1.0))
        outline = _blob_polygon(rng, center, r0, roughness=rng.uniform(0.08, 0.25))
        cv2.fillPoly(scene.labels, [outline], label)
        cv2.fillPoly(scene.signal, [outline], base)
        inner = np.rint((outline - center) * rng.uniform(0.75, 0.9) + center).astype(np.int32)
        cv2.fillPoly(scene.signal, [inner], base * rng.uniform(0.75, 0.92))
        core_center = (center[0] + rng.normal(0, 0.08 * r0), center[1] + rng.normal(0, 0.08 * r0))
        core = _blob_polygon(rng, core_center, r0 * rng.uniform(0.22, 0.45), roughness=0.2)
        if rng.random() < 0.55:
            cv2.fillPoly(scene.labels, [core], 0)
            cv2.fillPoly(scene.signal, [core], 0.0)
        else:
            dense = polarity == "brightfield"
            factor = rng.uniform(1.3, 1.7) if dense else rng.uniform(0.2, 0.5)
            cv2.fillPoly(scene.signal, [core], base * factor)


def _draw_rings(rng: np.random.Generator, scene: _Scene, size: int) -> None:
    """Annuli (hole = background) mixed with filled cells, placed apart or touching."""
    area = (size / 256) ** 2
    for _ in range(max(2, round(rng.uniform(3, 8) * area))):
        r_out = float(rng.uniform(10, 28))
        center = _place(rng, scene, size, r_out, min_clearance=1.0)
        if center is None:
            continue
        label = scene.new_label(center, r_out)
        angle = float(rng.uniform(0, 180))
        axes = (r_out, r_out * rng.uniform(0.75, 1.0))
        hole = rng.uniform(0.4, 0.7)
        hole_axes = (axes[0] * hole, axes[1] * hole)
        base = float(rng.uniform(0.5, 1.0))
        _ellipse(scene.labels, center, axes, angle, label)
        _ellipse(scene.signal, center, axes, angle, base)
        _ellipse(scene.labels, center, hole_axes, angle, 0)
        _ellipse(scene.signal, center, hole_axes, angle, 0.0)
    for _ in range(max(2, round(rng.uniform(5, 18) * area))):
        radius = float(rng.uniform(6, 16))
        center = _place(rng, scene, size, radius, min_clearance=0.0)
        if center is not None:
            _draw_cell(rng, scene, center, radius)


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """``(size, size)`` float32 smooth random field, roughly zero mean, unit std.

    A coarse Gaussian grid (one value per ``scale`` px) upsampled bicubically.
    """
    n = max(2, round(size / scale))
    coarse = rng.standard_normal((n, n), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` float32 multiplicative illumination, max 1: gradient times vignetting."""
    yy, xx = np.ogrid[0:size, 0:size]
    x = (xx.astype(np.float32) + 0.5) / size - 0.5
    y = (yy.astype(np.float32) + 0.5) / size - 0.5
    gx, gy = rng.uniform(-0.6, 0.6, 2)
    cx, cy = rng.uniform(-0.4, 0.4, 2)
    vignette = rng.uniform(0.0, 0.8)
    field = (1.0 + gx * x + gy * y) * (1.0 - vignette * ((x - cx) ** 2 + (y - cy) ** 2))
    field = np.clip(field, 0.35, None).astype(np.float32)
    return field / field.max()


def _render(
    rng: np.random.Generator, signal: np.ndarray, polarity: str, use_uint16: bool
) -> np.ndarray:
    """Camera model: signal ``(H, W)`` float32 -> raw image ``(H, W)`` uint8 or uint16."""
    size = signal.shape[0]
    light = _illumination(rng, size)
    intensity: np.ndarray
    if polarity == "fluorescence":
        background = rng.uniform(0.03, 0.3)
        intensity = light * (signal + np.float32(background))
        peak_photons = math.exp(rng.uniform(math.log(40.0), math.log(3000.0)))
    else:
        absorbance = rng.uniform(0.6, 1.3)
        intensity = light * np.exp(-absorbance * signal)
        peak_photons = math.exp(rng.uniform(math.log(300.0), math.log(5000.0)))
    sigma = rng.uniform(0.0, 2.0)
    if sigma > 0.3:
        intensity = cv2.GaussianBlur(intensity, (0, 0), sigma)
    expected = intensity * np.float32(peak_photons / float(intensity.max()))
    read_noise = np.float32(rng.uniform(0.5, 3.0))
    counts = rng.poisson(expected).astype(np.float32)
    counts = counts + read_noise * rng.standard_normal(counts.shape, dtype=np.float32)
    if use_uint16:
        full = float(2 ** int(rng.choice([12, 14, 16])) - 1)
        offset = rng.uniform(0.0, 0.3) * full
        top = offset + rng.uniform(0.1, 0.9) * (full - offset)
        dtype: type[np.integer] = np.uint16
    else:
        full = 255.0
        offset = rng.uniform(0.0, 25.0)
        top = rng.uniform(140.0, 250.0)
        dtype = np.uint8
    digital = counts * np.float32((top - offset) / peak_photons) + np.float32(offset)
    return np.rint(np.clip(digital, 0.0, full)).astype(dtype)


def _relabel_sequential(labels: np.ndarray, n_max: int) -> np.ndarray:
    """Renumber ``labels`` (H, W) int32 so the labels still present are ``1..N``."""
    present = np.bincount(labels.ravel(), minlength=n_max + 1) > 0
    present[0] = True
    lut = (np.cumsum(present) - 1).astype(np.int32)
    return lut[labels]


def generate_sample(rng: np.random.Generator, size: int = 256, kind: str | None = None) -> Sample:
    """Draw one synthetic microscopy image with its ground truth.

    Args:
        rng: source of all randomness; the same generator state gives the same sample.
        size: side of the square image in pixels (at least :data:`MIN_SIZE`).
        kind: one of :data:`KINDS`, or None to choose one uniformly at random.

    Returns:
        A :class:`Sample`: ``image`` (size, size) uint8 or uint16 (50/50; 16-bit images use a
        random 12/14/16-bit sub-range above a camera offset), ``mask`` (size, size) bool,
        ``labels`` (size, size) int32, ``kind`` and ``polarity``.

    Raises:
        ValueError: unknown ``kind`` or ``size`` below :data:`MIN_SIZE`.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    chosen = kind if kind is not None else KINDS[int(rng.integers(len(KINDS)))]
    polarity = POLARITIES[1] if rng.random() < BRIGHTFIELD_FRACTION else POLARITIES[0]
    use_uint16 = bool(rng.random() < UINT16_FRACTION)

    scene = _Scene.empty(size)
    if chosen == "cells":
        _draw_cells(rng, scene, size)
        texture_scale = rng.uniform(2.0, 5.0)
    elif chosen == "spheroids":
        _draw_spheroids(rng, scene, size, polarity)
        texture_scale = rng.uniform(2.5, 6.0)
    else:
        _draw_rings(rng, scene, size)
        texture_scale = rng.uniform(2.0, 5.0)
    texture = _smooth_noise(rng, size, texture_scale)
    texture_gain = np.float32(rng.uniform(0.1, 0.3))
    signal = scene.signal * np.clip(1.0 + texture_gain * texture, 0.4, 1.8)

    image = _render(rng, signal, polarity, use_uint16)
    labels = _relabel_sequential(scene.labels, scene.next_label - 1)
    return Sample(image=image, mask=labels > 0, labels=labels, kind=chosen, polarity=polarity)


def make_dataset(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` normalised synthetic images and masks for training, reproducible by ``seed``.

    Args:
        seed: seed of the ``numpy.random.default_rng`` all samples are drawn from.
        n: number of samples (>= 0).
        size: image side in pixels.

    Returns:
        ``(images, masks)``: images ``(n, size, size)`` float32 normalised with
        :func:`ml_service.imaging.preprocess.normalize_percentile` (1st..99.8th percentile -> 0..1),
        masks ``(n, size, size)`` float32 with values 0.0 or 1.0.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.float32)
    masks = np.empty((n, size, size), np.float32)
    for i in range(n):
        sample = generate_sample(rng, size)
        images[i] = normalize_percentile(sample.image)
        masks[i] = sample.mask
    return images, masks
