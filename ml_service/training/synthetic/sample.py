"""One synthetic sample (scene + imaging) and reproducible datasets of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_service.imaging.preprocess import normalize_percentile
from ml_service.training.synthetic.camera import draw_polarity, render
from ml_service.training.synthetic.cells import draw_cells, draw_clusters, draw_rings
from ml_service.training.synthetic.scene import Scene, smooth_noise
from ml_service.training.synthetic.spheroids import draw_large, draw_spheroids
from ml_service.training.targets import separated_foreground

KINDS: tuple[str, ...] = ("cells", "spheroids", "rings", "clusters", "large")
"""Scene kinds :func:`generate_sample` can draw."""

UINT16_FRACTION = 0.5
"""Share of samples stored as 16-bit images (the rest are 8-bit)."""

MIN_SIZE = 48
"""Smallest image side :func:`generate_sample` accepts, in pixels."""


@dataclass(frozen=True)
class Sample:
    """One synthetic image and its ground truth.

    Attributes:
        image: ``(H, W)`` uint8 or uint16 raw camera image.
        mask: ``(H, W)`` bool foreground (True on objects, False on background and in holes).
        labels: ``(H, W)`` int32 instance labels, 0 background, objects ``1..N`` sequential.
        kind: the scene kind, one of :data:`KINDS`.
        polarity: the imaging mode, one of
            :data:`~ml_service.training.synthetic.camera.POLARITIES`.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    kind: str
    polarity: str


def _draw_scene(rng: np.random.Generator, scene: Scene, kind: str, polarity: str) -> None:
    if kind == "cells":
        draw_cells(rng, scene)
    elif kind == "spheroids":
        draw_spheroids(rng, scene, polarity)
    elif kind == "rings":
        draw_rings(rng, scene)
    elif kind == "clusters":
        draw_clusters(rng, scene)
    else:
        draw_large(rng, scene)


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
    polarity = draw_polarity(rng)
    use_uint16 = bool(rng.random() < UINT16_FRACTION)

    scene = Scene.empty(size)
    _draw_scene(rng, scene, chosen, polarity)
    if scene.next_label == 1:  # nothing could be placed: one cell in the middle
        draw_cells(rng, scene)
    texture = smooth_noise(rng, size, float(rng.uniform(2.0, 6.0)))
    gain = np.float32(rng.uniform(0.1, 0.3))
    modulation = np.clip(1.0 + gain * texture, 0.4, 1.8)
    labels = scene.relabelled()
    mask = labels > 0
    image = render(
        rng, scene.signal * modulation, scene.defocused * modulation, mask, polarity, use_uint16
    )
    return Sample(image=image, mask=mask, labels=labels, kind=chosen, polarity=polarity)


def make_labelled_dataset(
    seed: int, n: int, size: int, kinds: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` normalised synthetic images and their instance labels, reproducible by ``seed``.

    Args:
        seed: seed of the ``numpy.random.default_rng`` all samples are drawn from.
        n: number of samples (>= 0).
        size: image side in pixels.
        kinds: draw only these kinds, in turn (None: a random kind per sample).

    Returns:
        ``(images, labels)``: images ``(n, size, size)`` float32 normalised with
        :func:`ml_service.imaging.preprocess.normalize_percentile` (1st..99.8th percentile ->
        0..1), labels ``(n, size, size)`` int32.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.float32)
    labels = np.empty((n, size, size), np.int32)
    for i in range(n):
        kind = kinds[i % len(kinds)] if kinds else None
        sample = generate_sample(rng, size, kind)
        images[i] = normalize_percentile(sample.image)
        labels[i] = sample.labels
    return images, labels


def make_dataset(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` normalised synthetic images and training masks, reproducible by ``seed``.

    Returns:
        ``(images, masks)``: images as in :func:`make_labelled_dataset`, masks
        ``(n, size, size)`` float32 0.0/1.0: the foreground with touching objects separated
        by a one-pixel gap (:func:`ml_service.training.targets.separated_foreground`).
    """
    images, labels = make_labelled_dataset(seed, n, size)
    masks = np.stack([separated_foreground(lab) for lab in labels]) if n else labels
    return images, masks.astype(np.float32)
