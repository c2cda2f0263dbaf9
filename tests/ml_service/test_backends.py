"""Backend equivalence: for every model, ONNX Runtime and eager PyTorch give the same logits
(within 1e-3; measured here ≤ 3e-5), and ONNX Runtime and OpenVINO (fp32; its logits are checked
in test_openvino.py) the same masks as torch through the full engine path (IoU ≥ 0.99 per
image), on held-out synthetic images and the real sample images, large ones tiled."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.imaging.preprocess import prepare
from ml_service.runtimes.base import DeviceOutOfMemory
from ml_service.runtimes.onnx_export import INPUT_NAME, ensure_onnx
from ml_service.runtimes.onnxruntime import OnnxRuntime, onnxruntime_unavailable
from ml_service.runtimes.registry import RUNTIMES
from ml_service.runtimes.torch import TorchRuntime
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine, SegmentationParams
from ml_service.serving.pool import ModelPool, build_module, build_runtime
from ml_service.serving.threads import thread_plan
from ml_service.settings import EngineSettings
from ml_service.tools.fastpath_choice import equivalence_images
from ml_service.tools.pipeline_rate import encode_png
from ml_service.training.evaluation import iou
from models.registry import MODEL_NAMES, get_spec
from tests.ml_service.checks import assert_concurrent_calls_match_serial

pytestmark = pytest.mark.slow  # loads, compiles or measures real models

LOGIT_ATOL = 1e-3  # |Δ logit|; bounds |Δ probability| by 2.5e-4


@pytest.fixture(scope="module")
def test_images() -> list[np.ndarray]:
    """Held-out synthetic images (seed 20000; training uses 1, validation 10000) and the real
    samples as 8-bit: those the fast-path choice checks masks on."""
    return equivalence_images()


def engine_on(settings: EngineSettings, backend: str) -> Engine:
    pool = ModelPool.load(settings, CpuProbe().torch_device, backend)
    return Engine(settings, pool.models, CpuProbe(), calibrate_missing=False)


@pytest.fixture(scope="module")
def engines(settings: EngineSettings) -> Iterator[dict[str, Engine]]:
    engines = {b: engine_on(settings, b) for b in RUNTIMES}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_logits_agree_on_every_tile_of_the_test_images(
    settings: EngineSettings, test_images: list[np.ndarray], model: str
) -> None:
    spec = get_spec(model, "small")
    module, weights = build_module(spec, settings)
    artifact = ensure_onnx(module, spec, weights["sha256"], settings.onnx_cache_dir)
    session = OnnxRuntime(
        artifact.data, torch.device("cpu"), threads=2, resident_bytes=0
    ).session
    tiles = [t for image in test_images for t in prepare(image, spec.input_size, 32)[0]]
    assert len(tiles) > len(test_images)  # the real images are tiled
    batch = np.stack(tiles)[:, None].astype(np.float32)
    for start in range(0, len(batch), 4):  # batches of up to 4: the dynamic batch axis
        chunk = batch[start : start + 4]
        with torch.inference_mode():
            expected = module(torch.from_numpy(chunk)).numpy()
        (got,) = session.run(None, {INPUT_NAME: chunk})
        assert got.shape == expected.shape == (len(chunk), 1, spec.input_size, spec.input_size)
        np.testing.assert_allclose(got, expected, rtol=0, atol=LOGIT_ATOL)
    # one at a time gives the same as in a batch
    (single,) = session.run(None, {INPUT_NAME: batch[-1:]})
    np.testing.assert_allclose(single, got[-1:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_masks_agree_through_the_full_engine_path(
    engines: dict[str, Engine], test_images: list[np.ndarray], model: str
) -> None:
    assert {e.pool.get(model).runtime.name for e in engines.values()} == set(engines)
    params = SegmentationParams(0.5, 0)
    for i, image in enumerate(test_images):
        data = encode_png(image)
        a = engines["torch"].segment(data, model, params)
        for other in ("onnxruntime", "openvino"):  # openvino in fp32: nothing recorded here
            b = engines[other].segment(data, model, params)
            assert iou(a.labels > 0, b.labels > 0) >= 0.99, f"{other}, image {i}"
            assert abs(len(a.objects) - len(b.objects)) <= 1, f"{other}, image {i}"


def test_one_session_serves_concurrent_callers(settings: EngineSettings) -> None:
    spec = get_spec("hrnet", "small")
    module, weights = build_module(spec, settings)
    backend = build_runtime("onnxruntime", spec, module, weights, settings, torch.device("cpu"))
    assert_concurrent_calls_match_serial(backend.run)


def test_onnx_session_threads_come_from_the_thread_plan(settings: EngineSettings) -> None:
    spec = get_spec("hrnet", "small")
    module, weights = build_module(spec, settings)
    for explicit in (None, 1):
        s = settings.model_copy(update={"onnx_threads": explicit})
        backend = build_runtime("onnxruntime", spec, module, weights, s, torch.device("cpu"))
        assert isinstance(backend, OnnxRuntime)
        options = backend.session.get_session_options()
        assert options.intra_op_num_threads == thread_plan(s, "cpu").onnx
        assert options.inter_op_num_threads == 1
    assert backend.session.get_session_options().intra_op_num_threads == 1


def test_probabilities_match_the_torch_backend_for_extreme_logits() -> None:
    class Extreme(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 400.0 - 200.0  # logits from -200 to 200: exp overflows in float32

    from ml_service.runtimes.base import _sigmoid

    x = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
    expected = TorchRuntime(Extreme(), torch.device("cpu")).run(x)
    with np.errstate(all="raise"):
        got = _sigmoid(x[:, 0] * 400.0 - 200.0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0


def test_onnxruntime_on_a_gpu_needs_the_cuda_provider() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    problem = onnxruntime_unavailable(torch.device("cuda", 0))
    assert problem is not None and "CUDA execution provider" in problem
    assert onnxruntime_unavailable(torch.device("cpu")) is None
    with pytest.raises(RuntimeUnavailable, match="CUDA execution provider"):
        OnnxRuntime(b"", torch.device("cuda", 0), threads=1, resident_bytes=0)


def test_unknown_backend_and_unloadable_model_are_clear_errors(settings: EngineSettings) -> None:
    spec = get_spec("hrnet", "small")
    module, weights = build_module(spec, settings)
    with pytest.raises(RuntimeUnavailable, match="unknown runtime .tensorrt.; valid: torch, onnx"):
        build_runtime("tensorrt", spec, module, weights, settings, torch.device("cpu"))
    with pytest.raises(RuntimeUnavailable, match="cannot load the model"):
        OnnxRuntime(b"garbage", torch.device("cpu"), threads=1, resident_bytes=0)


class _FailingSession:
    def __init__(self, message: str) -> None:
        self.message = message

    def run(self, *args: object) -> list[np.ndarray]:
        raise RuntimeError(self.message)


@pytest.mark.parametrize(
    ("message", "oom"),
    [
        ("Failed to allocate memory for requested buffer of size 123", True),
        ("CUDA failure 2: out of memory ; GPU=0", True),
        ("std::bad_alloc", True),
        ("Got invalid dimensions for input: input", False),
    ],
)
def test_onnxruntime_allocation_failures_are_device_oom_for_the_batcher(
    settings: EngineSettings, message: str, oom: bool
) -> None:
    spec = get_spec("hrnet", "small")
    module, weights = build_module(spec, settings)
    backend = build_runtime("onnxruntime", spec, module, weights, settings, torch.device("cpu"))
    assert isinstance(backend, OnnxRuntime)
    backend.session = _FailingSession(message)
    x = np.zeros((2, 1, 256, 256), np.float32)
    with pytest.raises(DeviceOutOfMemory if oom else RuntimeError) as info:
        backend.run(x)
    assert isinstance(info.value, DeviceOutOfMemory) is oom
