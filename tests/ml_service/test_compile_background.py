"""torch.compile on the CPU: compiled in the background while the model serves eagerly, the
switch, a failed compilation, the profiler's compile candidates and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ml_service.backends import TorchBackend
from ml_service.device import CpuProbe
from ml_service.engine import Engine
from ml_service.fastpath import FastPathConfig
from ml_service.fastpath_setup import compiles_in_background, use_compile_cache
from ml_service.profile import fastpath_options
from ml_service.settings import EngineSettings
from ml_service.synthetic import generate_sample

CPU = torch.device("cpu")


def _pngs(n: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [cv2.imencode(".png", generate_sample(rng, 256).image)[1].tobytes() for _ in range(n)]


def test_engine_is_ready_before_compiling_and_switches_with_the_same_masks(
    settings: EngineSettings, tmp_path: Path
) -> None:
    s = settings.model_copy(
        update={"models": ("hrnet",), "compile": "on", "compile_cache_dir": tmp_path / "ind"}
    )
    images = _pngs(3)
    with Engine.from_settings(s) as engine:
        backend = engine.pool.get("hrnet").backend
        assert isinstance(backend, TorchBackend)
        assert backend.config.compile == "default"
        (entry,) = engine.describe()["models"]
        assert entry["fastpath"]["compile_state"] in ("compiling", "compiled")
        eager = [engine.segment(b, "hrnet").labels for b in images]  # served meanwhile
        assert engine.wait_compiled(600)
        assert backend.compile_state == "compiled"
        compiled = [engine.segment(b, "hrnet").labels for b in images]
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_array_equal(a, b)


class _RefusesZeros(nn.Module):
    """Runs on real inputs, raises on the zeros the compiling warm-up feeds it: a compilation
    that fails, whatever the cause (no C++ compiler, an inductor bug, out of memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(x.any()):
            raise ValueError("all zeros")
        return self.conv(x)


def test_a_failed_compilation_leaves_the_model_running_eagerly() -> None:
    backend = TorchBackend(_RefusesZeros(), CPU)
    backend.configure(FastPathConfig("fp32", True, "default"), compile_later=True)
    assert backend.compile_state == "pending"
    x = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32) + 0.1
    before = backend.run(x)
    backend.compile_in_background([1, 2], 1, (1, 16, 16)).join(300)
    assert backend.compile_state.startswith("failed, running eagerly: ValueError")
    np.testing.assert_array_equal(backend.run(x), before)  # the eager module, still


def test_compiling_in_the_background_is_the_cpu_default(settings: EngineSettings) -> None:
    assert compiles_in_background(settings, "cpu")
    assert not compiles_in_background(settings, "cuda")  # CUDA graphs need the device alone
    forced = settings.model_copy(update={"compile_in_background": False})
    assert not compiles_in_background(forced, "cpu")


def test_compile_cache_goes_to_the_setting_unless_the_environment_chose(
    settings: EngineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"compile_cache_dir": tmp_path / "ind"})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # inductor's own default
    use_compile_cache(s)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "ind").resolve())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "chosen"))
    use_compile_cache(s)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "chosen")


def test_the_profiler_measures_compiled_candidates_unless_told_not_to() -> None:
    probe = CpuProbe()
    for arg in ("auto", "on"):
        assert fastpath_options(probe, arg, None, 8, 5).compile_modes == ("off", "default")
    off = fastpath_options(probe, "off", None, 8, 5)
    assert off.compile_modes == ("off",)
    assert any("torch.compile not measured" in n for n in off.notes)
