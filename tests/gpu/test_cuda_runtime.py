"""The torch runtime on CUDA: pinned host copies on per-thread side streams give the CPU's
masks, also when several threads run batches at once; CUDA graphs (``torch.compile`` mode
``reduce-overhead``) give eager's masks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from ml_service.imaging.preprocess import prepare
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.training.evaluation import iou, real_sample_images, to_uint8
from tests.gpu.conftest import cell_images, engine_settings

MODELS = ("hrnet", "unet")
PARAMS = SegmentationParams(0.5, 20)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu-runtime")


@pytest.fixture(scope="module")
def engines(tmp: Path) -> Iterator[tuple[Engine, Engine]]:
    """The same models eager fp32 on the CPU and on ``cuda:0``."""
    cpu = Engine.from_settings(engine_settings(tmp, device="cpu", models=MODELS))
    cuda = Engine.from_settings(engine_settings(tmp, models=MODELS))
    yield cpu, cuda
    cuda.close()
    cpu.close()


def images() -> list[np.ndarray]:
    return [*cell_images(3, 256, seed=11), to_uint8(real_sample_images()["cell"])]  # last: tiled


@pytest.mark.parametrize("model", MODELS)
def test_cuda_masks_equal_the_cpus(engines: tuple[Engine, Engine], model: str) -> None:
    cpu, cuda = engines
    for image in images():
        want, got = cpu.segment(image, model, PARAMS), cuda.segment(image, model, PARAMS)
        assert got.tiles == want.tiles
        assert iou(got.labels > 0, want.labels > 0) >= 0.99
    assert "cuda" in json.dumps(cuda.describe())


def test_batches_from_many_threads_at_once_equal_one_at_a_time(
    engines: tuple[Engine, Engine],
) -> None:
    """Each thread copies through pinned memory on its own side stream with ``non_blocking``;
    a missing synchronisation would hand one batch another's pixels or a half-copied input."""
    _, cuda = engines
    backend = cuda.pool.get("hrnet").backend
    size = cuda.pool.get("hrnet").spec.input_size
    batches = [
        np.stack([prepare(image, size, 32)[0][:1] for image in cell_images(4, 256, seed=s)])
        for s in range(12)
    ]
    alone = [backend.run(b) for b in batches]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(backend.run, batches))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    assert torch.cuda.is_available() and backend.device.type == "cuda"


def test_engine_under_concurrent_callers_loses_nothing(engines: tuple[Engine, Engine]) -> None:
    _, cuda = engines
    batch = cell_images(24, 256, seed=5)
    sequential = [cuda.segment(image, "unet", PARAMS) for image in batch[:6]]
    with ThreadPoolExecutor(8) as callers:
        futures = [callers.submit(cuda.segment, image, "unet", PARAMS) for image in batch]
        results = [f.result(300) for f in futures]
    assert len(results) == 24
    for first, again in zip(sequential, results[:6], strict=True):
        assert iou(first.labels > 0, again.labels > 0) >= 0.99


def test_cuda_graphs_give_eagers_masks(tmp: Path, engines: tuple[Engine, Engine]) -> None:
    _, eager = engines
    settings = engine_settings(tmp, models=("hrnet",), compile="on", max_batch_size=2)
    with Engine.from_settings(settings) as graphs:  # compiles and captures every size at warm-up
        assert "reduce-overhead" in json.dumps(graphs.describe())
        for image in images():
            want = eager.segment(image, "hrnet", PARAMS)
            got = graphs.segment(image, "hrnet", PARAMS)
            assert iou(got.labels > 0, want.labels > 0) >= 0.99
        with ThreadPoolExecutor(4) as callers:  # replays from several threads
            again = list(callers.map(lambda im: graphs.segment(im, "hrnet", PARAMS), images()))
        for image, result in zip(images(), again, strict=True):
            want = eager.segment(image, "hrnet", PARAMS)
            assert iou(result.labels > 0, want.labels > 0) >= 0.99
