"""The engine's CPU stages: thresholding before stitching is exact where the engine does it, and
a pool of worker processes (``ML_CPU_WORKERS``) gives the same results, errors included."""

from __future__ import annotations

import os
import signal
import time

import cv2
import numpy as np
import pytest

from ml_service.errors import ImageTooLarge, InvalidImage
from ml_service.imaging.preprocess import prepare
from ml_service.serving.cpu_stages import (
    CpuStages,
    decode_and_prepare,
    default_cpu_workers,
    pixel_exact,
    postprocess_outputs,
)
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.serving.pool import ModelPool
from ml_service.settings import EngineSettings
from ml_service.tools.pipeline_rate import encode_png
from ml_service.training.synthetic import generate_sample

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def test_pixel_exact_only_where_restore_copies_pixels() -> None:
    assert pixel_exact(prepare(np.zeros((200, 180), np.uint8), 256, 32)[1])  # letterbox, 1:1
    assert pixel_exact(prepare(np.zeros((600, 500), np.uint8), 256, 32)[1])  # tiles
    assert not pixel_exact(prepare(np.zeros((300, 300), np.uint8), 256, 32)[1])  # shrunk


@pytest.mark.parametrize("shape", [(200, 180), (600, 500)], ids=["letterbox", "tiles"])
def test_masks_postprocess_exactly_like_probabilities(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    prepared = decode_and_prepare(rng.integers(0, 255, shape, np.uint8), 10**8, 256, 32)
    n = len(prepared.inputs)
    probs = [cv2.GaussianBlur(rng.random((256, 256), np.float32), (0, 0), 6) for _ in range(n)]
    probs = [(p - p.min()) / (p.max() - p.min()) for p in probs]
    masks = [(p > np.float32(0.4)).astype(np.uint8) for p in probs]
    mixed = [masks[0], *probs[1:]]  # tiles may come back from batches of either kind
    a = postprocess_outputs(probs, prepared.restore, 0.4, 5)
    for outputs in (masks, mixed):
        b = postprocess_outputs(outputs, prepared.restore, 0.4, 5)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]


def test_default_workers_leave_small_machines_alone() -> None:
    assert [default_cpu_workers(c) for c in (1, 2, 3, 8, 32)] == [0, 1, 2, 7, 8]


def test_worker_processes_raise_the_engines_typed_errors() -> None:
    stages = CpuStages(1)
    try:
        stages.wait_started(stages.start())
        with pytest.raises(InvalidImage):
            stages.call(decode_and_prepare, b"\x89PNG\r\n\x1a\n" + b"\0" * 20, 10**8, 256, 32)
        big = encode_png(np.zeros((300, 300), np.uint8))
        with pytest.raises(ImageTooLarge):
            stages.call(decode_and_prepare, big, 1000, 256, 32)
    finally:
        stages.close()


def test_engine_results_are_identical_with_and_without_worker_processes(
    settings: EngineSettings,
) -> None:
    settings = settings.model_copy(update={"models": ("hrnet",), "backend": "torch"})
    rng = np.random.default_rng(7)
    images = [encode_png(generate_sample(rng, 256).image) for _ in range(4)]
    images.append(encode_png(cv2.resize(generate_sample(rng, 256).image, (600, 520))))  # tiled
    images.append(encode_png(cv2.resize(generate_sample(rng, 256).image, (300, 300))))  # shrunk
    results = {}
    for workers in (0, 2):
        s = settings.model_copy(update={"cpu_workers": workers})
        pool = ModelPool.load(s, CpuProbe().torch_device)
        with Engine(s, pool.models, CpuProbe(), calibrate_missing=False) as engine:
            engine.warm_up()
            assert engine.describe()["cpu_workers"] == workers
            futures = [engine.submit(d, "hrnet", SegmentationParams(0.5, 10)) for d in images]
            results[workers] = [f.result(timeout=120) for f in futures]
            with pytest.raises(InvalidImage):
                engine.submit(b"", "hrnet").result(timeout=60)
    for a, b in zip(results[0], results[2], strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.objects == b.objects and (a.width, a.height, a.tiles) == (
            b.width,
            b.height,
            b.tiles,
        )


def _pid() -> int:
    return os.getpid()


def test_pool_processes_survive_sigterm_and_a_killed_one_is_replaced() -> None:
    """SIGTERM to the process group (a drain) must not end the pool under the work in flight;
    a process that dies anyway (SIGKILL, the OOM killer) costs a new pool, not the call."""
    stages = CpuStages(1)
    try:
        stages.wait_started(stages.start())
        first = stages.call(_pid)
        os.kill(first, signal.SIGTERM)
        time.sleep(0.3)
        assert stages.call(_pid) == first  # ignored: still the same process
        os.kill(first, signal.SIGKILL)
        time.sleep(0.3)
        replaced = stages.call(_pid)  # the pool broke; the call is retried on a new one
        assert replaced != first
        assert stages.call(_pid) == replaced
    finally:
        stages.close()
