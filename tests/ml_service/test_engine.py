"""The engine end to end on the CPU with the committed demo weights: decode → batch → result."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from ml_service.errors import (
    EngineClosed,
    ImageTooLarge,
    InvalidImage,
    InvalidParameters,
    UnknownModel,
    UnsupportedFormat,
)
from ml_service.profiles import ModelProfile, ProfileBook
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine, SegmentationParams, SegmentationResult
from ml_service.serving.pool import ModelPool
from ml_service.settings import EngineSettings
from ml_service.tools.pipeline_rate import encode_png
from ml_service.training.evaluation import iou
from ml_service.training.synthetic import generate_sample
from tests.ml_service.fakes import RecordingRuntime

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def disc_image(h: int, w: int, centres: list[tuple[int, int]], r: int = 14) -> np.ndarray:
    img = np.full((h, w), 20, np.uint8)
    for cx, cy in centres:
        cv2.circle(img, (cx, cy), r, 200, -1)
    return img


def load_pool(settings: EngineSettings, *models: str) -> ModelPool:
    return ModelPool.load(settings.model_copy(update={"models": models}), CpuProbe().torch_device)


@pytest.fixture(scope="module")
def settings(settings: EngineSettings) -> EngineSettings:
    """The package's CPU settings (conftest.py), on ONNX Runtime, with a smaller pixel cap."""
    return settings.model_copy(
        update={"backend": "onnxruntime", "max_image_pixels": 4_000_000}
    )  # ML_BACKEND=auto: test_backend_choice.py


@pytest.fixture(scope="module")
def engine(settings: EngineSettings) -> Iterator[Engine]:
    eng = Engine.from_settings(settings)
    yield eng
    eng.close()


def test_engine_describes_models_weights_and_batching(engine: Engine) -> None:
    info = engine.describe()
    assert info["device"].startswith("cpu-") and info["device_kind"] == "cpu"
    names = {m["name"] for m in info["models"]}
    assert names == {"hrnet", "cbam_resunet", "unet"}
    for m in info["models"]:
        assert m["variant"] == "small" and m["input_size"] == [256, 256]
        assert len(m["weights"]["sha256"]) == 64
        assert m["batching"]["ceiling"] >= 1
        assert m["batching"]["profile_source"] == "calibrated"  # empty profile file given
        assert m["backend"] == "onnxruntime" and m["backend_reason"] == "ML_BACKEND=onnxruntime"
        assert m["batching"]["backend"] == "onnxruntime"  # the sizer uses that backend's profile
    assert info["memory"]["capacity_mb"] > 0
    assert info["gpus"] == []


@pytest.mark.parametrize("model", ["hrnet", "cbam_resunet", "unet"])
def test_trained_model_segments_held_out_synthetic_images(engine: Engine, model: str) -> None:
    rng = np.random.default_rng(123_456)  # seeds never used in training or validation
    samples = [generate_sample(rng, 256) for _ in range(8)]
    futures = [
        engine.submit(encode_png(s.image), model, SegmentationParams(0.5, 0)) for s in samples
    ]
    results = [f.result(timeout=120) for f in futures]
    scores = [iou(r.labels > 0, s.mask) for r, s in zip(results, samples, strict=True)]
    assert np.mean(scores) >= 0.8, scores
    r = results[0]
    assert isinstance(r, SegmentationResult)
    assert (r.width, r.height) == (256, 256)
    assert set(r.timings_ms) == {"preprocess", "queue", "inference", "postprocess", "total"}


def test_concurrent_callers_across_models_get_the_same_answer_as_one_caller(
    engine: Engine,
) -> None:
    rng = np.random.default_rng(5)
    images = [encode_png(generate_sample(rng, 256).image) for _ in range(6)]
    jobs = [(img, model) for img in images for model in ("hrnet", "unet")]
    alone = [engine.segment(img, m).labels for img, m in jobs]
    with ThreadPoolExecutor(8) as callers:
        together = list(callers.map(lambda job: engine.segment(*job).labels, jobs))
    for a, b in zip(alone, together, strict=True):
        assert iou(a > 0, b > 0) >= 0.99


def test_large_image_is_tiled_and_objects_come_back_in_original_coordinates(
    engine: Engine,
) -> None:
    centres = [(40, 40), (300, 60), (620, 410), (250, 250), (500, 120)]
    image = disc_image(480, 660, centres)
    result = engine.segment(encode_png(image), "unet", SegmentationParams(0.5, 20))
    assert result.tiles > 1
    # tiles share batches: the time the model ran is wall-clock time, inside the total
    assert 0 < result.timings_ms["inference"] <= result.timings_ms["total"]
    found = sorted((round(o.centroid[0]), round(o.centroid[1])) for o in result.objects)
    assert len(found) == len(centres)
    for (fx, fy), (cx, cy) in zip(found, sorted(centres), strict=True):
        assert abs(fx - cx) <= 3 and abs(fy - cy) <= 3


def test_sixteen_bit_tiff_with_narrow_range_segments_like_its_8_bit_version(
    engine: Engine, tmp_path: Path
) -> None:
    image8 = disc_image(200, 200, [(60, 60), (140, 130)])
    image16 = (image8.astype(np.uint16) * 4 + 1000).astype(np.uint16)  # 1000..1800 of 65535
    tifffile.imwrite(tmp_path / "x.tif", image16)
    r8 = engine.segment(encode_png(image8), "hrnet")
    r16 = engine.segment((tmp_path / "x.tif").read_bytes(), "hrnet")
    assert len(r16.objects) == len(r8.objects) == 2
    assert iou(r8.labels > 0, r16.labels > 0) >= 0.95


def test_outputs_encode(engine: Engine) -> None:
    result = engine.segment(encode_png(disc_image(128, 128, [(64, 64)], r=30)), "unet")
    assert result.to_json()["objects"]
    assert result.to_geojson()["type"] == "FeatureCollection"
    assert result.to_coco()["annotations"]
    assert result.mask_png().startswith(b"\x89PNG")


@pytest.mark.parametrize("model", ["hrnet", "cbam_resunet", "unet"])
def test_touching_discs_are_split_unless_split_is_off(engine: Engine, model: str) -> None:
    # two nucleus-sized discs overlapping (centres 1.6 r apart), with a microscope's blur
    image = cv2.GaussianBlur(disc_image(128, 160, [(55, 64), (71, 64)], r=10), (0, 0), 1.5)
    split = engine.segment(encode_png(image), model, SegmentationParams(0.5, 20))
    merged = engine.segment(encode_png(image), model, SegmentationParams(0.5, 20, split=False))
    assert split.params.split and split.to_json()["split"] is True
    assert merged.to_json()["split"] is False
    assert len(split.objects) == 2 and len(merged.objects) == 1
    for obj in split.objects:
        assert abs(obj.area - np.pi * 10**2) <= 0.15 * np.pi * 10**2
    assert merged.objects[0].area == sum(o.area for o in split.objects)


def _scene(scale: int) -> np.ndarray:
    """Five discs of radius 10 px (``scale`` 1), or the same scene drawn ``scale`` times larger."""
    centres = [(40, 40), (100, 50), (60, 110), (130, 120), (170, 60)]
    image = disc_image(
        180 * scale, 200 * scale, [(scale * x, scale * y) for x, y in centres], 10 * scale
    )
    return cv2.GaussianBlur(image, (0, 0), float(scale))


@pytest.mark.parametrize("model", ["hrnet", "cbam_resunet", "unet"])
def test_diameter_round_trip_of_coordinates_and_metrics(engine: Engine, model: str) -> None:
    # the scene three times larger, segmented with its objects' diameter (60 px), comes back in
    # its own pixel frame: 3x the centroids, 9x the areas, 3x the diameters of the small scene
    small = engine.segment(encode_png(_scene(1)), model, SegmentationParams(0.5, 20))
    big = engine.segment(encode_png(_scene(3)), model, SegmentationParams(0.5, 20, diameter=60))
    assert (big.width, big.height) == (600, 540) and big.labels.shape == (540, 600)
    assert big.diameter_px == 60 and big.to_json()["diameter"] == 60
    assert len(big.objects) == len(small.objects) == 5
    for a in small.objects:
        b = min(big.objects, key=lambda o: math.dist(o.centroid, [3 * v for v in a.centroid]))
        assert math.dist(b.centroid, [3 * v for v in a.centroid]) <= 3
        assert abs(b.area - 9 * a.area) <= 0.1 * 9 * a.area
        assert abs(b.equivalent_diameter - 60) <= 6
    assert np.count_nonzero(big.labels) == pytest.approx(sum(o.area for o in big.objects))


def test_diameter_auto_finds_the_objects_size(engine: Engine) -> None:
    result = engine.segment(encode_png(_scene(3)), "hrnet", SegmentationParams(diameter="auto"))
    assert result.diameter_px is not None and abs(result.diameter_px - 60) <= 6
    assert len(result.objects) == 5
    small = engine.segment(encode_png(_scene(1)), "hrnet", SegmentationParams(diameter="auto"))
    assert small.diameter_px is not None and abs(small.diameter_px - 20) <= 2
    assert len(small.objects) == 5


def test_callers_with_different_diameters_batch_together(engine: Engine) -> None:
    # images rescaled to different sizes still become model-sized inputs of one batcher
    images = [encode_png(_scene(1)), encode_png(_scene(3))]
    diameters: list[float | str | None] = [None, 60, "auto", 30, 20, 60]
    requests = [(images[i % 2], d) for i, d in enumerate(diameters)]
    alone = [
        engine.segment(im, "cbam_resunet", SegmentationParams(diameter=d)) for im, d in requests
    ]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [
            pool.submit(engine.segment, im, "cbam_resunet", SegmentationParams(diameter=d))
            for im, d in requests
        ]
        together = [f.result() for f in futures]
    for a, b in zip(alone, together, strict=True):
        assert b.diameter_px == a.diameter_px
        assert len(b.objects) == len(a.objects) and iou(a.labels > 0, b.labels > 0) >= 0.99


def test_a_diameter_that_rescales_past_the_pixel_limit_fails_the_image(engine: Engine) -> None:
    # 1000 x 1000 at diameter 5 would become 4540 x 4540 pixels
    image = encode_png(np.zeros((1000, 1000), np.uint8))
    with pytest.raises(InvalidParameters, match="diameter"):
        engine.submit(image, "hrnet", SegmentationParams(diameter=5)).result(timeout=60)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"GIF89a" + b"\0" * 100, UnsupportedFormat),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, InvalidImage),
    ],
    ids=["empty", "gif", "truncated-png"],
)
def test_bad_image_fails_its_future_with_a_typed_error(
    engine: Engine, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        engine.submit(data, "hrnet").result(timeout=30)


def test_image_over_pixel_limit_is_refused(engine: Engine) -> None:
    big = np.zeros((2100, 2000), np.uint8)
    with pytest.raises(ImageTooLarge):
        engine.submit(encode_png(big), "hrnet").result(timeout=30)


def test_unknown_model_and_bad_parameters_raise_at_submit(engine: Engine) -> None:
    image = encode_png(disc_image(64, 64, [(32, 32)]))
    with pytest.raises(UnknownModel, match="loaded models"):
        engine.submit(image, "segformer")
    with pytest.raises(InvalidParameters, match="threshold"):
        engine.submit(image, "hrnet", SegmentationParams(threshold=0.99))
    with pytest.raises(InvalidParameters, match="min_area"):
        engine.submit(image, "hrnet", SegmentationParams(min_area=-1))
    with pytest.raises(InvalidParameters, match="split"):
        engine.submit(image, "hrnet", SegmentationParams(split="no"))  # type: ignore[arg-type]
    for diameter in (0, -3, 4.9, 2001, float("nan"), "big", True):
        with pytest.raises(InvalidParameters, match="diameter"):
            engine.submit(image, "hrnet", SegmentationParams(diameter=diameter))


def test_out_of_memory_on_the_device_loses_no_image(settings: EngineSettings) -> None:
    # The real hrnet model behind a backend that fails every batch above 1 as a GPU would.
    pool = ModelPool.load(
        settings.model_copy(update={"models": ("hrnet",)}), CpuProbe().torch_device, "torch"
    )
    real = pool.get("hrnet").runtime
    injected = RecordingRuntime(oom_above=1)
    injected.module = real.module  # same weights, injected failure
    pool.models["hrnet"].runtime = injected
    book = ProfileBook()
    book.put(CpuProbe().key, "hrnet/small:torch", ModelProfile(0, 1, 4, 4, input_size=(256, 256)))
    with Engine(settings, pool.models, CpuProbe(), profiles=book) as eng:
        rng = np.random.default_rng(9)
        images = [encode_png(generate_sample(rng, 256, "cells").image) for _ in range(8)]
        with ThreadPoolExecutor(8) as callers:
            results = list(callers.map(lambda d: eng.submit(d, "hrnet").result(60), images))
        assert all(len(r.objects) > 0 for r in results)  # nothing lost
        assert eng.sizer.describe("hrnet")["oom_events"] >= 1
        assert eng.sizer.ceiling("hrnet") <= 2  # halved from 4 (additive increase may add 1)
        assert any(n > 1 for n in injected.sizes)  # it did try bigger batches first


def test_closed_engine_refuses_work(settings: EngineSettings) -> None:
    pool = ModelPool.load(
        settings.model_copy(update={"models": ("unet",)}), CpuProbe().torch_device
    )
    eng = Engine(settings, pool.models, CpuProbe(), calibrate_missing=False)
    eng.close()
    with pytest.raises(EngineClosed):
        eng.submit(b"x", "unet")
