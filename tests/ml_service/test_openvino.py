"""The OpenVINO backend: fp32 gives torch fp32's logits and masks for every model; bf16 keeps the
stem in fp32 (the IR's ``precise`` attribute, which the plugin honours), ``bf16@S`` everything
but the layers at 1/S; the profiler searches those and gates them on masks; precision is
resolved from the profile or ``ML_OPENVINO_PRECISION``; concurrent callers; clear errors where
it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.imaging.preprocess import prepare
from ml_service.profiles import FastPathRecord, ModelProfile, ProfileBook
from ml_service.runtimes import openvino as ov_module
from ml_service.runtimes.base import DeviceOutOfMemory
from ml_service.runtimes.onnx_export import ensure_onnx
from ml_service.runtimes.openvino import (
    OpenVinoRuntime,
    native_bf16,
    openvino_unavailable,
    resolve_precision,
)
from ml_service.runtimes.openvino_precision import (
    activation_strides,
    layers_outside,
    mark_precise,
    parse_precision,
    precision_at,
    stem_layer_names,
)
from ml_service.runtimes.torch.mixed_precision import stem_convolutions
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.serving.pool import build_module, build_runtime
from ml_service.serving.threads import thread_plan
from ml_service.settings import EngineSettings, SettingsError, load_settings
from ml_service.tools.fastpath_choice import MIN_MASK_IOU, equivalence_images
from ml_service.tools.openvino_choice import choose_openvino_precision, grow_union
from models.registry import MODEL_NAMES, get_spec
from tests.ml_service.checks import assert_concurrent_calls_match_serial

pytestmark = pytest.mark.slow  # loads, compiles or measures real models

LOGIT_ATOL = 1e-3
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no bf16 instructions")


def openvino_backend(settings: EngineSettings, model: str, precision: str = "fp32") -> tuple:
    spec = get_spec(model, "small")
    module, weights = build_module(spec, settings)
    forced = settings.model_copy(update={"openvino_precision": precision})
    backend = build_runtime("openvino", spec, module, weights, forced, CPU)
    assert isinstance(backend, OpenVinoRuntime)
    return spec, module, backend


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_fp32_logits_agree_with_torch_on_every_tile_of_the_test_images(
    settings: EngineSettings, model: str
) -> None:
    spec, module, backend = openvino_backend(settings, model)
    tiles = [t for image in equivalence_images() for t in prepare(image, spec.input_size, 32)[0]]
    batch = np.stack(tiles)[:, None].astype(np.float32)
    for start in range(0, len(batch), 4):  # batches of up to 4: the dynamic batch axis
        chunk = batch[start : start + 4]
        with torch.inference_mode():
            expected = torch.sigmoid(module(torch.from_numpy(chunk)))[:, 0].numpy()
        got = backend.run(chunk)
        assert got.shape == expected.shape == (len(chunk), spec.input_size, spec.input_size)
        # probabilities within a quarter of the logit tolerance (sigmoid's slope ≤ 1/4)
        np.testing.assert_allclose(got, expected, rtol=0, atol=LOGIT_ATOL / 4)
        masks = backend.run(chunk, np.full(len(chunk), 0.5, np.float32))
        assert masks.dtype == np.uint8
        np.testing.assert_array_equal(masks, (got > 0.5).astype(np.uint8))


@needs_bf16
def test_bf16_keeps_the_stem_in_fp32_as_torch_does(settings: EngineSettings) -> None:
    spec, module, backend = openvino_backend(settings, "hrnet")
    import openvino as ov

    sha = build_module(spec, settings)[1]["sha256"]
    model = ov.Core().read_model(ensure_onnx(module, spec, sha, settings.onnx_cache_dir).data)
    model.reshape([-1, 1, 256, 256])
    names = stem_layer_names(model, 256)
    # every convolution torch keeps in fp32 (hrnet: its two stride-2 convolutions, the first
    # bottleneck, the first transition); OpenVINO's order may run a few 1/4-resolution layers
    # before the first 1/8 one (hrnet: stage 2's first high-resolution block), which it keeps
    # too, but nothing after it
    marked = module_names(names)
    assert set(stem_convolutions(module, CPU)) <= marked
    assert marked - set(stem_convolutions(module, CPU)) <= {
        "backbone.stage2.0.branches.0.0.conv1",
        "backbone.stage2.0.branches.0.0.conv2",
    }
    assert not any("branches.1" in n or "stage3" in n or "/head" in n for n in names)
    backend.configure("bf16")
    assert backend.precision == "bf16" and backend.dtype_name == "bfloat16"
    assert backend.fp32_layers > 0  # those layers were marked in the IR
    x = np.random.default_rng(0).random((2, 1, 256, 256), dtype=np.float32)
    with torch.inference_mode():
        expected = torch.sigmoid(module(torch.from_numpy(x)))[:, 0].numpy()
    error = np.abs(backend.run(x) - expected).max()
    assert 1e-5 < error < 0.1  # really bf16, and still the same network


def module_names(names: list[str]) -> set[str]:
    """OpenVINO names of ONNX convolutions → torch module names: ``/backbone/layer1/layer1.0/
    conv1/Conv/WithoutBiases`` → ``backbone.layer1.0.conv1`` (a component that extends the one
    before it with a dot adds only its last part)."""
    found = set()
    for name in names:
        if "/Conv" not in name:
            continue
        parts: list[str] = []
        for component in name.split("/Conv")[0].strip("/").split("/"):
            parent = parts[-1] if parts else ""
            extends = parts and component.startswith(parent + ".")
            parts.append(component[len(parent) + 1 :] if extends else component)
        found.add(".".join(parts))
    return found


def test_mark_precise_adds_the_attribute_once_to_the_named_layers() -> None:
    ir = (
        b'<net><layers><layer id="0" name="a" type="Convolution"><data strides="1,1"/>'
        b'<input/></layer><layer id="1" name="b" type="Relu"><rt_info>'
        b'<attribute name="fused_names" version="0" value="b"/></rt_info></layer>'
        b'<layer id="2" name="c" type="Relu"/></layers></net>'
    )
    marked, count = mark_precise(ir, ["a", "b", "missing"])
    assert count == 2
    again, _ = mark_precise(marked, ["a", "b"])
    assert again.count(b'name="precise"') == 2  # not duplicated
    assert b'<layer id="2" name="c" type="Relu" />' in marked  # untouched
    a = marked.split(b'name="a"')[1].split(b"</layer>")[0]
    assert a.index(b"<data") < a.index(b"<rt_info>") < a.index(b"<input")  # IR order kept


def test_profiler_choice_gates_bf16_on_the_masks(settings: EngineSettings) -> None:
    spec, module, backend = openvino_backend(settings, "unet")
    chosen, record = choose_openvino_precision(module, spec, backend, batch_size=1, repeats=2)
    precisions = [c.precision for c in record.candidates]
    if not native_bf16():
        assert precisions == ["fp32"]
    else:
        strides = backend.activation_strides()
        singles = [precision_at([s]) for s in strides]
        assert precisions[: 2 + len(singles)] == ["fp32", "bf16", *singles]
        passed = {c.precision for c in record.candidates if not c.rejected}
        for union in precisions[2 + len(singles) :]:  # greedy unions of passing singles
            parts = parse_precision(union)[1] or ()
            assert len(parts) >= 2 and all(precision_at([p]) in passed for p in parts)
    for c in record.candidates:
        assert c.latency_ms > 0 and 0 < c.mask_iou <= 1
        assert bool(c.rejected) == (c.mask_iou < MIN_MASK_IOU)
    fp32 = record.candidates[0]
    assert fp32.mask_iou >= 0.999 and not fp32.rejected  # fp32: a few boundary pixels at most
    assert record.chosen["precision"] == chosen == backend.precision  # left compiled as chosen
    assert not next(c for c in record.candidates if c.precision == chosen).rejected


def test_unions_grow_from_the_fastest_single_and_skip_what_fails_the_masks() -> None:
    failing = {"bf16@1,4"}  # 1/4 with 1/1 moves the masks; each alone, and with 1/8, does not
    tried = grow_union(["bf16@4", "bf16@1", "bf16@8", "bf16@16"], lambda p: p not in failing)
    assert tried == ["bf16@1,4", "bf16@4,8", "bf16@4,8,16"]  # 1/1 left out once it failed
    assert grow_union(["bf16@4"], lambda p: True) == []  # one single: nothing to join
    assert grow_union(["bf16@8", "bf16@4"], lambda p: False) == ["bf16@4,8"]


def test_precision_names_parse_and_refuse_what_they_cannot_mean() -> None:
    assert parse_precision("fp32") == ("fp32", None)
    assert parse_precision("bf16") == ("bf16", None)
    assert parse_precision("bf16@4") == ("bf16", (4,))
    assert parse_precision("bf16@8,4,8") == ("bf16", (4, 8))
    assert precision_at([8, 4, 8]) == "bf16@4,8"
    assert parse_precision(precision_at([1, 32])) == ("bf16", (1, 32))
    for bad in ("fp16", "int8", "bf16@", "bf16@3", "bf16@0", "bf16@4,", "bf16@x", "BF16"):
        with pytest.raises(ValueError, match="bf16@S"):
            parse_precision(bad)


@needs_bf16
def test_bf16_at_a_resolution_keeps_every_other_layer_in_fp32(settings: EngineSettings) -> None:
    spec, module, backend = openvino_backend(settings, "hrnet")
    import openvino as ov

    model = backend.read_model(ov.Core())
    strides = activation_strides(model, 256)
    assert strides == backend.activation_strides() == (1, 2, 4, 8, 16, 32)  # input to 1/32
    outside = layers_outside(model, [4], 256)
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    at_4 = module_names([op.get_friendly_name() for op in convolutions]) - module_names(outside)

    def high_resolution(name: str) -> bool:  # hrnet's convolutions at 1/4 of the input
        parts = ("backbone.conv2", "backbone.layer1.", "branches.0.", "transition1.0.", "head.")
        return any(p in name for p in parts)

    assert at_4 and all(high_resolution(n) for n in at_4)
    assert not any(high_resolution(n) for n in module_names(outside))
    backend.configure("bf16@4")
    assert backend.precision == "bf16@4" and backend.dtype_name == "bfloat16"
    assert backend.fp32_layers == len(outside)  # every named layer was marked in the IR
    # the compiled model runs exactly the convolutions at 1/4 in bf16, the others in fp32
    ran = backend.runtime_precisions()
    in_bf16 = {n for n, (kind, p) in ran.items() if kind == "Convolution" and p == "bf16"}
    assert module_names(sorted(in_bf16)) == at_4
    assert len(in_bf16) < sum(kind == "Convolution" for kind, _ in ran.values())
    x = np.random.default_rng(0).random((2, 1, 256, 256), dtype=np.float32)
    with torch.inference_mode():
        expected = torch.sigmoid(module(torch.from_numpy(x)))[:, 0].numpy()
    error = np.abs(backend.run(x) - expected).max()
    assert 1e-5 < error < 0.1  # really bf16, and still the same network
    # a resolution the model does not have: every layer marked, and the plugin honours it for
    # all but Interpolate, which it runs in bf16 whatever the attribute (OpenVINO 2026.4.1)
    backend.configure("bf16@1024")
    ran = backend.runtime_precisions()
    in_bf16 = {kind for kind, p in ran.values() if p == "bf16"}
    assert in_bf16 - {"Reorder"} <= {"Interpolate"}  # and the conversions around it
    assert np.abs(backend.run(x) - expected).max() < error


def test_precision_comes_from_the_setting_then_the_profile_then_fp32() -> None:
    """(Where bf16 cannot run, ``configure`` refuses it: test_where_openvino_cannot_run.)"""
    record = FastPathRecord({"precision": "bf16", "channels_last": False, "compile": "off"})
    recorded = ModelProfile(1, 1, 1, 1, backend="openvino", fastpath=record)

    def yes() -> bool:
        return True

    def no() -> bool:
        return False

    assert resolve_precision("auto", recorded, yes) == (
        "bf16",
        "recorded in batch_sizes.json: bf16",
    )
    assert resolve_precision("fp32", recorded, yes) == (
        "fp32",
        "ML_OPENVINO_PRECISION=fp32",
    )
    assert resolve_precision("auto", None, yes) == ("fp32", "no recorded choice")
    # a profile recorded on another CPU with the same device key
    assert resolve_precision("auto", recorded, no) == (
        "fp32",
        "recorded bf16, but this CPU has no bf16 instructions",
    )
    assert resolve_precision("bf16", None, no)[0] == "bf16"  # forced: compile fails
    by_resolution = ModelProfile(
        1, 1, 1, 1, backend="openvino", fastpath=FastPathRecord({"precision": "bf16@4"})
    )
    assert resolve_precision("auto", by_resolution, yes)[0] == "bf16@4"
    assert resolve_precision("auto", by_resolution, no) == (
        "fp32",
        "recorded bf16@4, but this CPU has no bf16 instructions",
    )


@needs_bf16
def test_engine_runs_the_recorded_precision_and_describes_it(
    settings: EngineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = FastPathRecord({"precision": "bf16", "channels_last": False, "compile": "off"})
    book = ProfileBook()
    book.put(
        CpuProbe().key,
        "unet/small:openvino",
        ModelProfile(5, 10, 1, 2, backend="openvino", input_size=(256, 256), fastpath=record),
    )
    book.save(tmp_path / "batch_sizes.json")
    s = settings.model_copy(
        update={
            "models": ("unet",),
            "backend": "openvino",
            "profiles_path": tmp_path / "batch_sizes.json",
        }
    )
    compiled: list[str] = []
    configure = OpenVinoRuntime.configure

    def counting(backend: OpenVinoRuntime, precision: str) -> None:
        compiled.append(precision)
        configure(backend, precision)

    monkeypatch.setattr(OpenVinoRuntime, "configure", counting)
    with Engine.from_settings(s) as engine:
        assert compiled == ["bf16"]  # compiled once, straight in the recorded precision
        described = engine.describe()["models"][0]
        assert described["backend"] == "openvino"
        assert described["fastpath"]["precision"] == "bf16"
        assert described["fastpath"]["fp32_layers"] > 0
        assert described["fastpath"]["reason"] == "recorded in batch_sizes.json: bf16"
        result = engine.segment(np.zeros((64, 64), np.uint8), "unet")
        assert result.labels.shape == (64, 64)
    forced = s.model_copy(update={"openvino_precision": "fp32"})
    with Engine.from_settings(forced) as engine:
        assert engine.describe()["models"][0]["fastpath"]["precision"] == "fp32"


def test_one_compiled_model_serves_concurrent_callers(settings: EngineSettings) -> None:
    s = settings.model_copy(update={"batch_concurrency": 2})
    _, _, backend = openvino_backend(s, "hrnet")
    assert backend.streams == 2 and backend.threads == thread_plan(s, "cpu").onnx
    assert_concurrent_calls_match_serial(backend.run)


def test_where_openvino_cannot_run_the_errors_say_why(
    settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda = torch.device("cuda", 0)
    assert openvino_unavailable(cuda) == "OpenVINO runs on the CPU here, not on cuda:0"
    assert openvino_unavailable(CPU) is None
    spec = get_spec("hrnet", "small")
    module, weights = build_module(spec, settings)
    with pytest.raises(RuntimeUnavailable, match="ML_BACKEND=openvino but OpenVINO runs on the"):
        build_runtime("openvino", spec, module, weights, settings, cuda)
    _, _, backend = openvino_backend(settings, "hrnet")
    for bad in ("fp16", "bf16@3"):
        with pytest.raises(RuntimeUnavailable, match="OpenVINO precision must be fp32, bf16"):
            backend.configure(bad)
    monkeypatch.setattr(ov_module, "native_bf16", lambda: False)  # a CPU without bf16
    with pytest.raises(RuntimeUnavailable, match="this CPU has no bf16 instructions"):
        backend.configure("bf16")
    assert backend.precision == "fp32"  # still compiled as before
    with pytest.raises(RuntimeUnavailable, match="cannot load the model"):
        OpenVinoRuntime(b"not a model", CPU, input_size=256, threads=1, resident_bytes=0)


def test_allocation_failures_are_device_oom_for_the_batcher(settings: EngineSettings) -> None:
    _, _, backend = openvino_backend(settings, "hrnet")

    class FailingRequest:
        def infer(self, _inputs: object) -> None:
            raise RuntimeError("Exception from src/core: Failed to allocate 8 GB")

    backend._local.request = FailingRequest()  # this thread's request
    with pytest.raises(DeviceOutOfMemory, match="allocate"):
        backend.run(np.zeros((1, 1, 256, 256), np.float32))


def test_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("int8", "bf16@3", "bf16@"):
        monkeypatch.setenv("ML_OPENVINO_PRECISION", bad)
        with pytest.raises(SettingsError, match="ML_OPENVINO_PRECISION.*bf16@S"):
            load_settings()
    monkeypatch.setenv("ML_OPENVINO_PRECISION", " BF16@8,4,8 ")
    assert load_settings().openvino_precision == "bf16@4,8"  # as the profiler writes it
    monkeypatch.setenv("ML_OPENVINO_PRECISION", "bf16")
    monkeypatch.setenv("ML_BACKEND", "openvino")
    loaded = load_settings()
    assert loaded.backend == "openvino" and loaded.openvino_precision == "bf16"


@needs_bf16
def test_the_profiler_records_and_prints_a_precision_by_resolution(
    tmp_path: Path,
    onnx_cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m ml_service.tools.profile`` on OpenVINO end to end: whatever it chooses
    (hrnet/small
    here: ``bf16@4``, see docs/benchmarks.md) is recorded, read back and printed."""
    from ml_service.tools import profile

    path = tmp_path / "batch_sizes.json"
    for name, value in (
        ("ML_DEVICE", "cpu"),
        ("ML_PROFILES_PATH", str(path)),
        ("ML_ONNX_CACHE_DIR", str(onnx_cache_dir)),
    ):
        monkeypatch.setenv(name, value)
    argv = ["--models", "hrnet", "--backends", "openvino", "--max-batch", "1", "--repeats", "1"]
    profile.main([*argv, "--no-pipeline"])
    recorded = ProfileBook.load(path).get(CpuProbe().key, "hrnet/small:openvino")
    assert recorded is not None and recorded.fastpath is not None
    chosen = recorded.fastpath.chosen["precision"]
    assert chosen in {c.precision for c in recorded.fastpath.candidates}
    assert recorded.dtype == ("float32" if chosen == "fp32" else "bfloat16")
    assert "bf16@4" in {c.precision for c in recorded.fastpath.candidates}
    printed = capsys.readouterr().out
    assert f"{chosen} *" in printed and "bf16@4" in printed
