"""Training-time augmentation of normalised images and their targets: crops, flips, 90-degree
rotations and intensity changes. Pure array functions drawing from a ``numpy`` generator."""

from __future__ import annotations

import numpy as np

from ml_service.imaging.preprocess import PAD_VALUE


def random_crop(
    rng: np.random.Generator, image: np.ndarray, target: np.ndarray, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop x crop`` window of an ``(H, W)`` image and its target.

    A side shorter than ``crop`` is padded on the right/bottom as the engine pads (image with
    :data:`~ml_service.imaging.preprocess.PAD_VALUE`, target with background).
    """
    h, w = image.shape
    if h < crop or w < crop:
        img = np.full((max(h, crop), max(w, crop)), PAD_VALUE, np.float32)
        tgt = np.zeros(img.shape, target.dtype)
        img[:h, :w], tgt[:h, :w] = image, target
        image, target, (h, w) = img, tgt, img.shape
    y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return image[y0 : y0 + crop, x0 : x0 + crop], target[y0 : y0 + crop, x0 : x0 + crop]


def random_geometry(
    rng: np.random.Generator, image: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 flips/90-degree rotations, the same for image and target."""
    k = int(rng.integers(4))
    image, target = np.rot90(image, k), np.rot90(target, k)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    return image, target


def random_intensity(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Contrast, brightness and gamma jitter plus a little Gaussian noise (``(H, W)`` float32,
    values around the 0..1 of percentile normalisation)."""
    out = np.clip(image, 0.0, None) ** np.float32(np.exp(rng.uniform(-0.3, 0.3)))
    out = out * np.float32(rng.uniform(0.8, 1.2)) + np.float32(rng.uniform(-0.08, 0.08))
    if rng.random() < 0.3:
        sigma = np.float32(rng.uniform(0.0, 0.05))
        out = out + sigma * rng.standard_normal(out.shape, dtype=np.float32)
    return out.astype(np.float32)


def random_batch(
    rng: np.random.Generator,
    images: list[np.ndarray],
    targets: list[np.ndarray],
    batch: int,
    crop: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented crops of randomly chosen images.

    Returns:
        ``(x, y)``: ``(batch, 1, crop, crop)`` float32 inputs and 0/1 targets.
    """
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        img, tgt = random_crop(rng, images[i], targets[i], crop)
        img, tgt = random_geometry(rng, img, tgt)
        xs.append(random_intensity(rng, img))
        ys.append(tgt.astype(np.float32))
    return np.stack(xs)[:, None], np.stack(ys)[:, None]
