"""The preview: 8-bit, the engine's percentile contrast, scaled down when large."""

from __future__ import annotations

import cv2
import numpy as np

from ml_service.imaging.preprocess import normalize_percentile
from ml_service.imaging.preview import preview_array, preview_png


def test_a_dim_16_bit_image_gets_the_contrast_the_engine_uses() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(30_000, 31_000, (40, 50)).astype(np.uint16)  # 16-bit, narrow range
    out = preview_array(image)
    assert out.dtype == np.uint8 and out.shape == (40, 50)
    expected = np.round(np.clip(normalize_percentile(image), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255
    eight_bit = ((image - 30_000) // 4).astype(np.uint8)  # the same picture in 8 bits
    assert np.abs(preview_array(eight_bit).astype(int) - out).max() <= 2


def test_colour_keeps_its_hues_and_drops_alpha() -> None:
    rgba = np.zeros((20, 30, 4), np.uint16)
    rgba[:, :15, 0] = 4000  # red half, dim 16-bit values
    rgba[:, 15:, 2] = 4000  # blue half
    rgba[..., 3] = 65535
    out = preview_array(rgba)
    assert out.shape == (20, 30, 3)
    assert tuple(out[5, 5]) == (255, 0, 0) and tuple(out[5, 25]) == (0, 0, 255)


def test_large_images_are_scaled_down_and_encoded_as_png() -> None:
    image = np.zeros((300, 1200), np.uint8)
    image[:, 600:] = 200
    data = preview_png(image, max_side=400)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (100, 400) and decoded.dtype == np.uint8
    assert decoded[50, 10] == 0 and decoded[50, 390] == 255
