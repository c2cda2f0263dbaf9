"""Preprocessing on the device (``ML_DEVICE_PREPROCESS``) on ``cuda:0``: the CPU path's model
inputs within the documented tolerance, numpy's percentiles, and the same masks through the
engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml_service.imaging.device_preprocess import INPUT_TOLERANCE, percentiles, prepare_on_device
from ml_service.imaging.preprocess import prepare
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.training.evaluation import iou, real_sample_images, to_uint8
from tests.gpu.conftest import cell_images, engine_settings

CUDA = torch.device("cuda", 0)
RNG = np.random.default_rng(3)


def inputs() -> dict[str, np.ndarray]:
    cells = cell_images(2, 340, seed=4)
    return {
        "synthetic letterboxed": cells[0],
        "uint16 letterboxed": (RNG.random((333, 290)) * 1000 + 30_000).astype(np.uint16),
        "rgb uint8": RNG.integers(0, 255, (310, 280, 3), dtype=np.uint8),
        "fits": RNG.integers(0, 255, (200, 256), dtype=np.uint8),
        "tiled uint8": to_uint8(real_sample_images()["cell"]),
        "tiled float32": real_sample_images()["ihc_nuclei"],
    }


@pytest.mark.parametrize("name", list(inputs()))
def test_device_inputs_equal_the_cpu_paths(name: str) -> None:
    image = inputs()[name]
    expected, restore = prepare(image, 256, 32)
    got = prepare_on_device(image, restore, CUDA)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert tuple(got.shape) == expected.shape
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=0, atol=INPUT_TOLERANCE)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_percentiles_on_the_device_are_numpys(dtype: type) -> None:
    values: np.ndarray = RNG.integers(0, 4000, 100_003).astype(dtype)
    got = percentiles(torch.from_numpy(values).to(CUDA), 1.0, 99.8).cpu().numpy()
    want = np.percentile(values.astype(np.float32), [1.0, 99.8])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_engine_masks_equal_with_preprocessing_on_the_device(tmp_path: Path) -> None:
    params = SegmentationParams(0.5, 20)
    images = [*cell_images(2, 340, seed=9), to_uint8(real_sample_images()["cell"])]
    made = [
        Engine.from_settings(engine_settings(tmp_path, models=("hrnet",), device_preprocess=mode))
        for mode in ("off", "on")
    ]
    try:
        off, on = made
        assert on.describe()["models"][0]["device_preprocess"]["on"] is True
        for image in images:
            want, got = off.segment(image, "hrnet", params), on.segment(image, "hrnet", params)
            assert got.tiles == want.tiles
            assert iou(got.labels > 0, want.labels > 0) >= 0.99
    finally:
        for engine in made:
            engine.close()
