"""Preprocessing on the device, run here on CPU tensors: the same model inputs as the CPU
path (``ml_service.imaging.preprocess.prepare``) for letterboxed and tiled images, and the same
masks
through the engine with ``ML_DEVICE_PREPROCESS=on``."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import torch

from ml_service.errors import InvalidImage
from ml_service.imaging.device_preprocess import (
    INPUT_TOLERANCE,
    area_taps,
    percentiles,
    prepare_on_device,
    use_device_preprocess,
)
from ml_service.imaging.preprocess import plan_restore, prepare
from ml_service.serving.batcher import DynamicBatcher
from ml_service.serving.cpu_stages import decode_and_plan, decode_and_prepare
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.serving.pool import ModelPool
from ml_service.settings import EngineSettings
from ml_service.tools.pipeline_rate import encode_png
from ml_service.training.evaluation import iou, real_sample_images, to_uint8
from ml_service.training.synthetic import generate_sample

CPU = torch.device("cpu")
RNG = np.random.default_rng(7)


def _smooth(shape: tuple[int, ...], lo: int, hi: int, dtype: type) -> np.ndarray:
    noise = cv2.GaussianBlur(RNG.random(shape[:2]).astype(np.float32), (0, 0), 3.0)
    picture = lo + (hi - lo) * (noise - noise.min()) / (noise.max() - noise.min())
    if len(shape) == 3:
        picture = np.stack([picture * (0.6 + 0.2 * c) for c in range(shape[2])], axis=2)
    return picture.astype(dtype)


LETTERBOXED = {
    "uint8 shrunk": _smooth((300, 370), 0, 255, np.uint8),
    "uint8 shrunk 1.5x": _smooth((384, 384), 10, 240, np.uint8),
    "uint8 odd shape": _smooth((257, 200), 0, 255, np.uint8),
    "uint8 fits": _smooth((200, 256), 0, 255, np.uint8),
    "uint16 narrow range": _smooth((333, 290), 30_000, 31_000, np.uint16),
    "uint16 big-endian": _smooth((300, 310), 0, 4095, np.uint16).astype(">u2"),
    "rgb uint8": _smooth((310, 280, 3), 0, 255, np.uint8),
    "rgba uint16": _smooth((200, 380, 4), 0, 65535, np.uint16),
    "float32": _smooth((290, 330), 0, 1, np.float32),
    "constant": np.full((100, 90), 7, np.uint8),
}


def _cpu_and_device(image: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    expected, restore = prepare(image, size, 32)
    assert plan_restore(image.shape[:2], size, 32) == restore
    got = prepare_on_device(image, restore, CPU)
    assert got.dtype == torch.float32 and got.device == CPU
    return expected, got.numpy()


@pytest.mark.parametrize("name", list(LETTERBOXED))
def test_letterboxed_inputs_equal_the_cpu_paths(name: str) -> None:
    expected, got = _cpu_and_device(LETTERBOXED[name])
    assert got.shape == expected.shape == (1, 256, 256)
    np.testing.assert_allclose(got, expected, rtol=0, atol=INPUT_TOLERANCE)


def test_inputs_that_need_no_resize_are_bit_identical() -> None:
    expected, got = _cpu_and_device(LETTERBOXED["uint8 fits"])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "image",
    [
        to_uint8(real_sample_images()["cell"]),
        real_sample_images()["ihc_nuclei"],
        _smooth((700, 900), 100, 3000, np.uint16),
    ],
    ids=["cell uint8", "ihc float32", "uint16 700x900"],
)
def test_tiled_inputs_are_bit_identical(image: np.ndarray) -> None:
    expected, got = _cpu_and_device(image)
    assert len(got) > 1
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int16])
@pytest.mark.parametrize("n", [1, 2, 7, 10_001])
def test_percentiles_are_numpys(dtype: type, n: int) -> None:
    values: np.ndarray = RNG.integers(0, 200, n).astype(dtype)
    for low, high in [(1.0, 99.8), (0.0, 100.0), (50.0, 50.5), (33.3, 66.6)]:
        got = percentiles(torch.from_numpy(values), low, high).numpy()
        np.testing.assert_array_equal(got, np.percentile(values.astype(np.float32), [low, high]))


def test_area_taps_average_whole_and_partial_pixels() -> None:
    index, weight = area_taps(512, 256, CPU)  # integer ratio: pairs, half each
    assert torch.equal(index[:, :2], torch.arange(512).reshape(256, 2))
    assert torch.allclose(weight[:, :2], torch.full((256, 2), 0.5))
    assert torch.all(weight[:, 2] == 0)
    index, weight = area_taps(3, 2, CPU)  # cells [0, 1.5) and [1.5, 3)
    np.testing.assert_allclose(weight.numpy(), [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0]], atol=1e-7)
    assert index[1, :2].tolist() == [1, 2]


@pytest.mark.parametrize(
    "image", [np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10), bool), np.zeros((0, 5))]
)
def test_what_the_cpu_path_refuses_is_refused(image: np.ndarray) -> None:
    restore = plan_restore((10, 10), 256, 32)
    with pytest.raises(InvalidImage):
        prepare_on_device(image, restore, CPU)
    with pytest.raises(InvalidImage):
        decode_and_plan(image, 10_000, 256, 32)


def test_decode_and_plan_keeps_the_pixels_and_plans_like_decode_and_prepare() -> None:
    image = LETTERBOXED["uint16 narrow range"]
    planned = decode_and_plan(encode_png(image), 10_000_000, 256, 32)
    prepared = decode_and_prepare(encode_png(image), 10_000_000, 256, 32)
    assert planned.pixels.dtype == np.uint16
    np.testing.assert_array_equal(planned.pixels, image)
    assert (planned.restore, planned.width, planned.height) == (
        prepared.restore,
        prepared.width,
        prepared.height,
    )


def test_setting_decides_for_torch_models_auto_only_on_cuda() -> None:
    assert use_device_preprocess("auto", "torch", CPU, True)[0] is False
    assert use_device_preprocess("auto", "torch", torch.device("cuda:0"), True)[0] is True
    assert use_device_preprocess("on", "torch", CPU, True) == (True, "ML_DEVICE_PREPROCESS=on")
    assert use_device_preprocess("off", "torch", torch.device("cuda"), True)[0] is False
    on, reason = use_device_preprocess("on", "onnxruntime", CPU, False)
    assert not on and "host arrays" in reason


# --- through the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(settings: EngineSettings) -> Iterator[tuple[Engine, Engine]]:
    """The same torch model behind two engines: preprocessing on the CPU, and on the device."""
    base = settings.model_copy(update={"backend": "torch", "models": ("hrnet",)})
    made = []
    for mode in ("off", "on"):
        s = base.model_copy(update={"device_preprocess": mode})
        models = ModelPool.load(s, CPU).models
        made.append(Engine(s, models, CpuProbe(), calibrate_missing=False))
    yield made[0], made[1]
    for engine in made:
        engine.close()


def test_engine_reports_where_it_preprocesses(engines: tuple[Engine, Engine]) -> None:
    cpu_side, device_side = engines
    assert cpu_side.describe()["models"][0]["device_preprocess"]["on"] is False
    info = device_side.describe()["models"][0]["device_preprocess"]
    assert info == {"on": True, "reason": "ML_DEVICE_PREPROCESS=on"}


@pytest.mark.parametrize(
    "image",
    [
        generate_sample(np.random.default_rng(20_001), 340, "cells").image,  # letterbox, shrunk
        _smooth((240, 250, 3), 0, 255, np.uint8),  # colour, fits
        to_uint8(real_sample_images()["cell"]),  # tiled
    ],
    ids=["shrunk", "rgb", "tiled"],
)
def test_engine_masks_equal_with_preprocessing_on_the_device(
    engines: tuple[Engine, Engine], image: np.ndarray
) -> None:
    params = SegmentationParams(0.5, 20)
    cpu_side, device_side = (e.segment(encode_png(image), "hrnet", params) for e in engines)
    assert device_side.tiles == cpu_side.tiles
    assert iou(device_side.labels > 0, cpu_side.labels > 0) >= 0.99
    assert abs(len(device_side.objects) - len(cpu_side.objects)) <= 1


def test_non_finite_pixels_are_refused_before_they_reach_the_device(
    engines: tuple[Engine, Engine],
) -> None:
    image = np.random.default_rng(0).random((300, 300), dtype=np.float32)
    for bad in (np.nan, np.inf):
        image[5, 7] = bad
        for engine in engines:  # both paths
            with pytest.raises(InvalidImage, match="NaN or infinite"):
                engine.segment(image, "hrnet")


def test_a_tensor_input_of_the_wrong_shape_fails_alone(engines: tuple[Engine, Engine]) -> None:
    batcher: DynamicBatcher = engines[1].batchers["hrnet"]
    bad = batcher.submit(torch.zeros(1, 128, 128))
    with pytest.raises(InvalidImage, match="float32"):
        bad.result()
    good = batcher.submit(torch.zeros(1, 256, 256), 0.5).result()
    assert good.prob.shape == (256, 256) and good.prob.dtype == np.uint8
