"""``ML_BACKEND``: auto picks per device and model the fastest recorded backend, or measures all
that run here at warm-up; explicit choices are obeyed; the sizer uses the chosen backend's
profile; thread counts come from the cores given; the profiler measures every backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import BatchPoint, ModelProfile, ProfileBook
from ml_service.runtimes.registry import RUNTIMES
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.serving.runtime_choice import (
    RuntimeChoice,
    load_chosen,
    profile_rate,
    recorded_choice,
)
from ml_service.serving.threads import cgroup_cpu_limit, thread_plan
from ml_service.settings import EngineSettings, load_settings
from ml_service.tools import profile as profiler
from models.registry import get_spec

SPEC = get_spec("hrnet", "small")
KEY = CpuProbe().key


def profile(backend: str, ms_at: dict[int, float], best: int = 1, size: int = 256) -> ModelProfile:
    points = tuple(BatchPoint(n, 10.0 * n, ms) for n, ms in sorted(ms_at.items()))
    return ModelProfile(
        5, 10, best, max(ms_at), backend=backend, input_size=(size, size), points=points
    )


@pytest.fixture()
def settings(tmp_path: Path, onnx_cache_dir: Path) -> EngineSettings:
    return EngineSettings(
        device="cpu",
        models=("hrnet",),
        profiles_path=tmp_path / "batch_sizes.json",
        onnx_cache_dir=onnx_cache_dir,
    )


def test_profile_rate_is_throughput_at_the_best_batch_size() -> None:
    assert profile_rate(profile("torch", {1: 10.0, 2: 10.0}, best=1)) == pytest.approx(100)
    assert profile_rate(profile("torch", {1: 10.0, 2: 10.0}, best=2)) == pytest.approx(200)
    assert profile_rate(ModelProfile(0, 1, 1, 1)) is None


def test_recorded_choice_picks_the_faster_backend_per_model() -> None:
    book = ProfileBook()
    two = ("torch", "onnxruntime")
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 30.0}))
    assert recorded_choice(book, KEY, SPEC, two) is None  # only one backend recorded
    book.put(KEY, "hrnet/small:onnxruntime", profile("onnxruntime", {1: 10.0}))
    choice = recorded_choice(book, KEY, SPEC, two)
    assert choice == RuntimeChoice(
        "onnxruntime",
        f"auto (batch_sizes.json, {KEY}): torch 33.3 img/s, onnxruntime 100.0 img/s",
    )
    assert recorded_choice(book, KEY, SPEC) is None  # openvino runs here but is not recorded
    book.put(KEY, "hrnet/small:openvino", profile("openvino", {1: 8.0}))
    assert recorded_choice(book, KEY, SPEC) == RuntimeChoice(
        "openvino",
        f"auto (batch_sizes.json, {KEY}): torch 33.3 img/s, onnxruntime 100.0 img/s, "
        "openvino 125.0 img/s",
    )
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 8.0}))  # a tie goes to torch
    assert recorded_choice(book, KEY, SPEC).runtime == "torch"  # type: ignore[union-attr]
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 80.0}))  # then to onnxruntime
    book.put(KEY, "hrnet/small:onnxruntime", profile("onnxruntime", {1: 8.0}))
    assert recorded_choice(book, KEY, SPEC).runtime == "onnxruntime"  # type: ignore[union-attr]
    assert recorded_choice(book, "NVIDIA H100 80GB HBM3", SPEC) is None  # another device


def test_records_for_another_input_size_are_ignored() -> None:
    book = ProfileBook()
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 30.0}))
    book.put(KEY, "hrnet/small:onnxruntime", profile("onnxruntime", {1: 10.0}, size=512))
    assert recorded_choice(book, KEY, SPEC) is None


def test_auto_follows_the_record_even_against_a_faster_reality(settings: EngineSettings) -> None:
    book = ProfileBook()  # torch recorded faster (it is not, on this CPU): the record decides
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 5.0}))
    book.put(KEY, "hrnet/small:onnxruntime", profile("onnxruntime", {1: 50.0}))
    book.put(KEY, "hrnet/small:openvino", profile("openvino", {1: 40.0}))
    model = load_chosen(SPEC, settings, CpuProbe(), book)
    assert model.runtime.name == "torch"
    assert model.runtime_reason.startswith("auto (batch_sizes.json")


@pytest.mark.slow  # measures every backend
def test_auto_without_a_record_measures_every_backend_and_keeps_the_fastest(
    settings: EngineSettings,
) -> None:
    book = ProfileBook()
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 1.0}))  # one record is not enough
    model = load_chosen(SPEC, settings, CpuProbe(), book)
    measured = {b: book.get(KEY, f"hrnet/small:{b}") for b in RUNTIMES}
    assert all(p is not None and p.source == "calibrated" for p in measured.values())
    fastest = max(measured, key=lambda b: profile_rate(measured[b]))  # type: ignore[arg-type,return-value]
    assert model.runtime.name == fastest
    assert model.runtime_reason.startswith(f"auto (measured at warm-up on {KEY})")


@pytest.mark.parametrize("backend", tuple(RUNTIMES))
def test_explicit_backend_is_obeyed_whatever_the_record(
    settings: EngineSettings, backend: str
) -> None:
    book = ProfileBook()
    for b in RUNTIMES:
        book.put(KEY, f"hrnet/small:{b}", profile(b, {1: 5.0 if b != backend else 50.0}))
    s = settings.model_copy(update={"backend": backend})
    model = load_chosen(SPEC, s, CpuProbe(), book)
    assert model.runtime.name == backend and model.runtime_reason == f"ML_BACKEND={backend}"


def test_sizer_uses_the_profile_of_the_backend_in_use(settings: EngineSettings) -> None:
    book = ProfileBook()
    book.put(KEY, "hrnet/small:torch", profile("torch", {1: 30.0, 2: 60.0}, best=1))
    book.put(KEY, "hrnet/small:onnxruntime", profile("onnxruntime", {1: 10.0, 4: 20.0}, best=4))
    book.put(KEY, "hrnet/small:openvino", profile("openvino", {1: 20.0, 2: 40.0}, best=2))
    book.save(settings.profiles_path)
    with Engine.from_settings(settings) as engine:
        described = engine.describe()["models"][0]
        assert described["backend"] == "onnxruntime"
        assert described["batching"]["backend"] == "onnxruntime"
        assert engine.sizer.ceiling("hrnet") == 4  # the onnxruntime profile's best batch size
        result = engine.segment(np.zeros((64, 64), np.uint8), "hrnet")
        assert result.labels.shape == (64, 64)


def test_invalid_backend_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ML_BACKEND`` is checked against the runtime registry when the engine starts (settings
    do not know the runtimes), before any model is loaded."""
    monkeypatch.setenv("ML_BACKEND", "tensorrt")
    monkeypatch.setenv("ML_DEVICE", "cpu")
    with pytest.raises(RuntimeUnavailable, match="ML_BACKEND='tensorrt' names no runtime; valid"):
        Engine.from_settings(load_settings())
    monkeypatch.setenv("ML_BACKEND", "onnxruntime")
    monkeypatch.setenv("ML_ONNX_THREADS", "3")
    monkeypatch.setenv("ML_ONNX_CACHE_DIR", "/tmp/somewhere")
    s = load_settings()
    assert (s.backend, s.onnx_threads, str(s.onnx_cache_dir)) == (
        "onnxruntime",
        3,
        "/tmp/somewhere",
    )


@pytest.mark.parametrize(
    ("update", "kind", "cores", "expected"),
    [
        ({}, "cpu", 4, (4, 4)),
        ({"batch_concurrency": 2}, "cpu", 4, (2, 2)),
        ({"batch_concurrency": 8}, "cpu", 4, (1, 1)),
        ({"torch_threads": 3}, "cpu", 4, (3, 4)),
        ({"onnx_threads": 1}, "cpu", 4, (4, 1)),
        ({}, "cuda", 6, (6, 6)),
    ],
)
def test_thread_plan_divides_the_cores_given_among_batches_in_flight(
    settings: EngineSettings,
    update: dict[str, int],
    kind: str,
    cores: int,
    expected: tuple[int, int],
) -> None:
    plan = thread_plan(settings.model_copy(update=update), kind, cores)
    assert (plan.torch, plan.onnx) == expected


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("garbage", None)],
)
def test_cgroup_cpu_quota_caps_the_cores(tmp_path: Path, text: str, cores: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert cgroup_cpu_limit(cpu_max) == cores
    assert cgroup_cpu_limit(tmp_path / "missing") is None


@pytest.mark.slow  # measures every backend
def test_profiler_measures_every_backend_and_keeps_other_devices(
    tmp_path: Path, onnx_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "batch_sizes.json"
    other = ProfileBook()
    other.put("NVIDIA H100 80GB HBM3", "hrnet/full:torch", profile("torch", {8: 40.0}, size=1024))
    other.save(path)
    monkeypatch.setenv("ML_PROFILES_PATH", str(path))
    monkeypatch.setenv("ML_ONNX_CACHE_DIR", str(onnx_cache_dir))
    monkeypatch.setenv("ML_DEVICE", "cpu")
    profiler.main(["--models", "hrnet", "--max-batch", "2", "--repeats", "1"])
    devices = json.loads(path.read_text())["devices"]
    assert set(devices["NVIDIA H100 80GB HBM3"]) == {"hrnet/full:torch"}
    assert set(devices[KEY]) == {f"hrnet/small:{b}" for b in RUNTIMES}
    for key, entry in devices[KEY].items():
        assert entry["backend"] == key.split(":")[1]
        assert [p["batch_size"] for p in entry["points"]] == [1, 2]
        assert all(p["latency_ms"] > 0 for p in entry["points"])
