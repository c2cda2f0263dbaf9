"""The torch fast path: configuration rules, masks of reduced precision and channels_last
equal to fp32's (IoU ≥ 0.99 per image, on the CPU with bf16 and fp16 autocast, stem in fp32),
thresholding on the device, the profiler's choice recorded and run by the engine, warm-up of
compiled models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import FastPathCandidate, FastPathRecord, ModelProfile, ProfileBook
from ml_service.runtimes.torch import TorchRuntime
from ml_service.runtimes.torch.fastpath import (
    FP32,
    FastPathConfig,
    candidate_precisions,
    candidates,
    native_fp16_cpu,
    resolve,
    supported_precisions,
    unsupported,
)
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.serving.pool import LoadedModel, build_module
from ml_service.serving.runtime_choice import load_chosen
from ml_service.settings import EngineSettings, SettingsError, load_settings
from ml_service.tools.fastpath_choice import (
    MIN_MASK_IOU,
    choose,
    equivalence_images,
    foreground_masks,
)
from ml_service.tools.profile import profile_runtimes
from ml_service.tools.tuning import FastPathOptions
from ml_service.training.evaluation import iou
from models.registry import MODEL_NAMES, get_spec
from tests.ml_service.fakes import RecordingRuntime

pytestmark = pytest.mark.slow  # loads, compiles or measures real models

CPU = torch.device("cpu")
# fp16 runs on any CPU but, without oneDNN fp16 kernels, contiguous fp16 convolutions take
# seconds per 256-px image here; with channels_last 0.2 s: fp16 is checked in that format.
REDUCED = [
    FastPathConfig("bf16"),
    FastPathConfig("bf16", channels_last=True),
    FastPathConfig("fp16", channels_last=True),
    FastPathConfig("fp32", channels_last=True),
]


@pytest.fixture(scope="module")
def test_images() -> list[np.ndarray]:
    """The images of test_backends.py: held-out synthetic ones and the real samples (tiled)."""
    return equivalence_images()


# Plain bf16 autocast reached only IoU 0.970 (hrnet) / 0.972 (unet) on scikit-image's cell.png;
# with the stem kept in fp32 (ml_service.runtimes.torch.mixed_precision) every model reaches ≥ 0.994
# there;
# fp16 (11 significant bits to bf16's 8) ≥ 0.999.
def _cases() -> list[object]:
    return [
        pytest.param(model, config, id=f"{model}-{config.label}")
        for model in MODEL_NAMES
        for config in REDUCED
    ]


@pytest.mark.parametrize(("model", "config"), _cases())
def test_reduced_precision_and_channels_last_masks_agree_with_fp32(
    settings: EngineSettings, test_images: list[np.ndarray], model: str, config: FastPathConfig
) -> None:
    spec = get_spec(model, "small")
    module, _ = build_module(spec, settings)
    reference = foreground_masks(TorchRuntime(module, CPU), test_images, spec.input_size)
    fresh, _ = build_module(spec, settings)
    got = foreground_masks(TorchRuntime(fresh, CPU, config), test_images, spec.input_size)
    scores = [iou(a, b) for a, b in zip(got, reference, strict=True)]
    assert min(scores) >= 0.99, scores
    assert np.mean(scores) >= 0.995, scores


def test_device_threshold_gives_exactly_the_thresholded_probabilities(
    settings: EngineSettings,
) -> None:
    spec = get_spec("hrnet", "small")
    module, _ = build_module(spec, settings)
    backend = TorchRuntime(module, CPU)
    x = np.random.default_rng(1).random((3, 1, 256, 256), dtype=np.float32)
    thresholds = np.array([0.3, 0.5, 0.7], np.float32)
    prob = backend.run(x)
    masks = backend.run(x, thresholds)
    assert prob.dtype == np.float32 and masks.dtype == np.uint8 and masks.shape == prob.shape
    expected = (prob > thresholds[:, None, None]).astype(np.uint8)
    np.testing.assert_array_equal(masks, expected)
    out, times = backend.run_staged(x, thresholds)
    np.testing.assert_array_equal(out, masks)
    assert times["h2d"] is None and times["d2h"] is None  # no copies on the CPU
    assert times["compute"] is not None and times["compute"] > 0


def test_onnxruntime_thresholds_like_torch(settings: EngineSettings) -> None:
    spec = get_spec("unet", "small")
    s = settings.model_copy(update={"backend": "onnxruntime"})
    ort = load_chosen(spec, s, CpuProbe(), ProfileBook()).runtime
    torch_backend = load_chosen(
        spec, settings.model_copy(update={"backend": "torch"}), CpuProbe(), ProfileBook()
    ).runtime
    x = np.random.default_rng(2).random((2, 1, 256, 256), dtype=np.float32)
    thresholds = np.array([0.5, 0.5], np.float32)
    a, b = ort.run(x, thresholds), torch_backend.run(x, thresholds)
    assert a.dtype == np.uint8 and a.shape == (2, 256, 256)
    assert iou(a, b) >= 0.999


def test_configurations_valid_per_device() -> None:
    assert supported_precisions(CPU) == ("fp32", "bf16", "fp16")
    for config in (FastPathConfig("tf32"), FastPathConfig("fp32", compile="reduce-overhead")):
        assert unsupported(config, CPU) is not None
    assert unsupported(FastPathConfig("bf16", True, "default"), CPU) is None
    assert unsupported(FastPathConfig("fp16", True), CPU) is None
    # fp16 runs on every CPU but is measured only where oneDNN has fp16 kernels
    native = native_fp16_cpu()
    assert candidate_precisions(CPU) == (("fp32", "bf16", "fp16") if native else ("fp32", "bf16"))
    assert [c.label for c in candidates(CPU)][:4] == [
        "fp32",
        "fp32+channels_last",
        "bf16",
        "bf16+channels_last",
    ]
    every_mode = candidates(CPU, compile_modes=("off", "default", "reduce-overhead"))
    assert len(every_mode) == 2 * 2 * len(candidate_precisions(CPU))
    with pytest.raises(ValueError, match="precision"):
        FastPathConfig("int8")
    config = FastPathConfig("bf16", True, "default")
    assert FastPathConfig.from_json(config.to_json()) == config
    assert config.label == "bf16+channels_last+compile:default"


def _profile(chosen: FastPathConfig | None) -> ModelProfile:
    record = FastPathRecord(chosen.to_json()) if chosen else None
    return ModelProfile(0, 10, 2, 4, input_size=(256, 256), fastpath=record)


def test_resolve_takes_the_recorded_choice_unless_forced() -> None:
    recorded = FastPathConfig("bf16", channels_last=True)
    assert resolve("auto", "auto", None, CPU)[0] == FP32
    assert resolve("auto", "auto", _profile(None), CPU)[0] == FP32
    config, reason = resolve("auto", "auto", _profile(recorded), CPU)
    assert config == recorded and "recorded" in reason
    assert resolve("fp32", "auto", _profile(recorded), CPU)[0] == FastPathConfig("fp32", True)
    assert resolve("auto", "on", _profile(recorded), CPU)[0].compile == "default"
    compiled = FastPathConfig("bf16", False, "default")
    assert resolve("auto", "off", _profile(compiled), CPU)[0].compile == "off"
    # a GPU-only recorded choice on the CPU falls back to fp32 rather than failing
    assert resolve("auto", "auto", _profile(FastPathConfig("tf32")), CPU)[0] == FP32
    with pytest.raises(RuntimeUnavailable, match="ML_PRECISION=tf32"):
        resolve("tf32", "auto", None, CPU)
    assert resolve("fp16", "auto", None, CPU)[0] == FastPathConfig("fp16")  # runs, slowly


def test_choice_is_the_fastest_agreeing_candidate_ties_to_the_simpler() -> None:
    def cand(precision: str, cl: bool, ms: float, rejected: str = "") -> FastPathCandidate:
        return FastPathCandidate(precision, cl, "off", 1, ms, 10.0, 1.0, 0.0, rejected)

    assert choose([cand("fp32", False, 10), cand("bf16", True, 5)]) == FastPathConfig("bf16", True)
    assert choose([cand("fp32", False, 10), cand("bf16", False, 9.8)]) == FP32  # within 3%
    assert choose([cand("fp32", False, 10), cand("bf16", False, 2, "masks differ")]) == FP32
    assert choose([]) == FP32


def test_profile_file_records_the_choice_and_loads_without_it(tmp_path: Path) -> None:
    record = FastPathRecord(
        FastPathConfig("bf16", True).to_json(),
        (FastPathCandidate("fp32", False, "off", 1, 30.0, 50.0, 1.0),),
        ("torch.compile not measured",),
    )
    book = ProfileBook()
    book.put("cpu-2core", "hrnet/small:torch", ModelProfile(1, 2, 1, 4, fastpath=record))
    book.put("cpu-2core", "hrnet/small:onnxruntime", ModelProfile(1, 2, 1, 4))
    path = tmp_path / "batch_sizes.json"
    book.save(path)
    loaded = ProfileBook.load(path)
    assert loaded.get("cpu-2core", "hrnet/small:torch") == book.get(
        "cpu-2core", "hrnet/small:torch"
    )
    assert loaded.get("cpu-2core", "hrnet/small:onnxruntime").fastpath is None  # type: ignore[union-attr]
    assert "fastpath" not in path.read_text().split("hrnet/small:onnxruntime")[0]


def test_profiler_chooses_records_and_the_engine_runs_the_choice(
    settings: EngineSettings,
) -> None:
    spec = get_spec("hrnet", "small")
    probe = CpuProbe()
    fast = FastPathOptions(("off",), batch_size=1, repeats=1, notes=("test",))
    (profile,) = profile_runtimes(
        spec, settings, probe, ["torch"], batch_sizes=[1, 2], repeats=1, fast=fast
    ).values()
    record = profile.fastpath
    assert record is not None and record.notes == ("test",)
    assert [FastPathConfig(c.precision, c.channels_last).label for c in record.candidates] == [
        c.label for c in candidates(CPU)
    ]
    for c in record.candidates:
        assert bool(c.rejected) == (c.mask_iou < MIN_MASK_IOU), c
        assert c.latency_ms > 0 and c.peak_mb >= 0
    fp32 = [c for c in record.candidates if c.precision == "fp32"]
    assert all(c.mask_iou == 1.0 and not c.rejected for c in fp32)
    chosen = FastPathConfig.from_json(record.chosen)
    assert not next(
        c
        for c in record.candidates
        if FastPathConfig(c.precision, c.channels_last, c.compile) == chosen
    ).rejected
    assert profile.dtype == chosen.dtype_name
    # the engine runs what the profile records
    book = ProfileBook()
    book.put(probe.key, "hrnet/small:torch", profile)
    model = load_chosen(spec, settings.model_copy(update={"backend": "torch"}), probe, book)
    with Engine(settings, {"hrnet": model}, probe, profiles=book) as engine:
        (info,) = engine.describe()["models"]
        assert info["fastpath"]["precision"] == chosen.precision
        assert info["fastpath"]["channels_last"] == chosen.channels_last
        assert isinstance(model.runtime, TorchRuntime) and model.runtime.config == chosen


def test_ml_precision_forces_torch_and_conflicts_with_onnxruntime(
    settings: EngineSettings,
) -> None:
    spec = get_spec("hrnet", "small")
    forced = settings.model_copy(update={"backend": "auto", "precision": "bf16"})
    model = load_chosen(spec, forced, CpuProbe(), ProfileBook())
    assert model.runtime.name == "torch" and "ML_PRECISION=bf16" in model.runtime_reason
    with Engine(forced, {"hrnet": model}, CpuProbe(), calibrate_missing=False) as engine:
        assert engine.describe()["models"][0]["fastpath"]["precision"] == "bf16"
    for other in ("onnxruntime", "openvino"):
        conflict = settings.model_copy(update={"backend": other, "compile": "on"})
        with pytest.raises(RuntimeUnavailable, match=f"ML_BACKEND={other} conflicts with ML_"):
            load_chosen(spec, conflict, CpuProbe(), ProfileBook())


def test_invalid_precision_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_PRECISION", "int4")
    with pytest.raises(SettingsError, match="ML_PRECISION"):
        load_settings()


def test_warm_up_of_a_compiled_model_runs_every_batch_size_the_sizer_may_pick(
    settings: EngineSettings,
) -> None:
    backend = RecordingRuntime()
    backend.config = FastPathConfig(compile="default")  # as if compiled; runs eagerly here
    spec = get_spec("hrnet", "small")
    model = LoadedModel(spec, backend, {"random": True})
    book = ProfileBook()
    book.put(CpuProbe().key, "hrnet/small:torch", ModelProfile(0, 1, 3, 3, input_size=(256, 256)))
    s = settings.model_copy(update={"compile": "auto"})
    engine = Engine(s, {"hrnet": model}, CpuProbe(), profiles=book)
    backend.config = FastPathConfig(compile="default")  # the engine re-resolved it to fp32
    try:
        engine.warm_up()
    finally:
        engine.close()
    # sizes 1..3, once each: each size compiles on its first run
    assert backend.sizes == [1, 2, 3]


def test_warm_up_with_cuda_graphs_runs_every_size_three_times() -> None:
    """CUDA graphs are recorded on a later run than the first, so each size runs three times
    (the sizes and counts only: this machine has no CUDA to run them on)."""
    backend = RecordingRuntime()
    backend.config = FastPathConfig(compile="reduce-overhead")
    model = LoadedModel(get_spec("hrnet", "small"), backend, {"random": True})
    assert model.runtime.warm_up_sizes(3) == ([1, 2, 3], 3)
    backend.config = FastPathConfig()
    assert model.runtime.warm_up_sizes(3) == ([1, 3], 1)
