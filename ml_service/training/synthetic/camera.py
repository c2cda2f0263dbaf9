"""The imaging model: from a scene's noise-free signal to a raw camera image.

Three modes (:data:`POLARITIES`):

- ``"fluorescence"``: bright objects on a dark background (signal adds light);
- ``"brightfield"``: dark objects on bright light (Beer-Lambert absorption);
- ``"phase"``: phase contrast: objects darker than the background with a bright halo
  around them.

Every mode adds a textured, uneven background (smooth noise at a coarse and a fine scale on top
of a linear gradient times vignetting), blurs the out-of-focus layer strongly and the whole
image a little (optics), then applies Poisson shot noise at a random photon budget, Gaussian
read noise, a camera offset and a random 8-bit or 12/14/16-bit sub-range, as real cameras do.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ml_service.training.synthetic.scene import smooth_noise

POLARITIES: tuple[str, ...] = ("fluorescence", "brightfield", "phase")
"""Imaging modes: bright on dark, dark (absorbing) on bright, phase-dark with a halo."""

POLARITY_WEIGHTS: tuple[float, ...] = (0.6, 0.25, 0.15)
"""How often each mode of :data:`POLARITIES` is drawn."""


def draw_polarity(rng: np.random.Generator) -> str:
    """One of :data:`POLARITIES`, with the probabilities :data:`POLARITY_WEIGHTS`."""
    return POLARITIES[int(rng.choice(len(POLARITIES), p=POLARITY_WEIGHTS))]


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` float32 multiplicative illumination, max 1: gradient times vignetting."""
    yy, xx = np.ogrid[0:size, 0:size]
    x = (xx.astype(np.float32) + 0.5) / size - 0.5
    y = (yy.astype(np.float32) + 0.5) / size - 0.5
    gx, gy = rng.uniform(-0.8, 0.8, 2)
    cx, cy = rng.uniform(-0.4, 0.4, 2)
    vignette = rng.uniform(0.0, 0.9)
    field = (1.0 + gx * x + gy * y) * (1.0 - vignette * ((x - cx) ** 2 + (y - cy) ** 2))
    field = np.clip(field, 0.3, None).astype(np.float32)
    return field / field.max()


def _background_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` float32 multiplicative background texture around 1 (coarse + fine)."""
    coarse = smooth_noise(rng, size, float(rng.uniform(20.0, 80.0)))
    fine = smooth_noise(rng, size, float(rng.uniform(2.0, 8.0)))
    gain_c, gain_f = rng.uniform(0.0, 0.25), rng.uniform(0.0, 0.12)
    return np.clip(1.0 + gain_c * coarse + gain_f * fine, 0.5, 1.6).astype(np.float32)


def _optics(rng: np.random.Generator, signal: np.ndarray, defocused: np.ndarray) -> np.ndarray:
    """In-focus signal plus the out-of-focus layer blurred by sigma 2.5-6 px."""
    if not defocused.any():
        return signal
    blurred = cv2.GaussianBlur(defocused, (0, 0), float(rng.uniform(2.5, 6.0)))
    return signal + blurred * np.float32(rng.uniform(0.5, 0.9))


def _intensity(
    rng: np.random.Generator, signal: np.ndarray, mask: np.ndarray, polarity: str
) -> tuple[np.ndarray, float]:
    """Light reaching the camera (before illumination) and the photon budget of its peak."""
    texture = _background_texture(rng, signal.shape[0])
    if polarity == "fluorescence":
        background = np.float32(rng.uniform(0.03, 0.3)) * texture
        return signal + background, math.exp(rng.uniform(math.log(40.0), math.log(3000.0)))
    if polarity == "brightfield":
        absorbance = np.float32(rng.uniform(0.6, 1.3))
        light = texture * np.exp(-absorbance * signal)
        return light, math.exp(rng.uniform(math.log(300.0), math.log(5000.0)))
    width = float(rng.uniform(1.5, 4.0))
    spread = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), width)
    halo = np.clip(spread - mask, 0.0, None) * np.float32(rng.uniform(0.6, 1.4))
    depth = np.float32(rng.uniform(0.3, 0.6))
    light = texture * (1.0 + halo) * (1.0 - depth * np.clip(signal, 0.0, 1.5) / 1.5)
    return light, math.exp(rng.uniform(math.log(300.0), math.log(5000.0)))


def _digitise(
    rng: np.random.Generator, counts: np.ndarray, peak_photons: float, use_uint16: bool
) -> np.ndarray:
    """Counts -> raw integers: camera offset, gain and a random 8- or 12/14/16-bit range."""
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


def render(
    rng: np.random.Generator,
    signal: np.ndarray,
    defocused: np.ndarray,
    mask: np.ndarray,
    polarity: str,
    use_uint16: bool,
) -> np.ndarray:
    """Camera model.

    Args:
        rng: source of randomness.
        signal: ``(H, W)`` float32 in-focus stain density, 0 on background.
        defocused: ``(H, W)`` float32 out-of-focus stain density.
        mask: ``(H, W)`` bool foreground (where phase-contrast halos form around).
        polarity: one of :data:`POLARITIES`.
        use_uint16: 16-bit output (else 8-bit).

    Returns:
        ``(H, W)`` uint8 or uint16 raw image.
    """
    size = signal.shape[0]
    intensity, peak_photons = _intensity(rng, _optics(rng, signal, defocused), mask, polarity)
    intensity = _illumination(rng, size) * intensity
    sigma = rng.uniform(0.0, 2.0)
    if sigma > 0.3:
        intensity = cv2.GaussianBlur(intensity, (0, 0), sigma)
    expected = intensity * np.float32(peak_photons / float(intensity.max()))
    read_noise = np.float32(rng.uniform(0.5, 3.0))
    counts = rng.poisson(expected).astype(np.float32)
    counts = counts + read_noise * rng.standard_normal(counts.shape, dtype=np.float32)
    return _digitise(rng, counts, peak_photons, use_uint16)
