"""torch.compile on the CPU (automatic dynamic batch): compiled at warm-up with the same masks
as eager, its on-disk cache (used by a restarted process), and the profiler's candidates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ml_service.runtimes.torch.runtime import use_compile_cache
from ml_service.serving.device import CpuProbe
from ml_service.serving.engine import Engine
from ml_service.settings import EngineSettings
from ml_service.tools.tuning import fastpath_options
from ml_service.training.evaluation import iou
from ml_service.training.synthetic import generate_sample

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def _pngs(n: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [cv2.imencode(".png", generate_sample(rng, 256).image)[1].tobytes() for _ in range(n)]


def test_compiled_at_warm_up_with_the_masks_of_eager(
    settings: EngineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    base = settings.model_copy(update={"models": ("hrnet",), "max_batch_size": 4})
    images = _pngs(3)
    with Engine.from_settings(base.model_copy(update={"compile": "off"})) as engine:
        eager = [engine.segment(b, "hrnet").labels for b in images]
    cache = tmp_path / "inductor"
    compiled_settings = base.model_copy(update={"compile": "on", "compile_cache_dir": cache})
    with Engine.from_settings(compiled_settings) as engine:
        (entry,) = engine.describe()["models"]
        assert entry["fastpath"]["compile"] == "default"
        compiled = [engine.segment(b, "hrnet").labels for b in images]
    # where inductor caches what it compiles, for a restarted worker (whether files land there
    # depends on what this test process compiled before: its in-memory caches come first)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.resolve())
    for a, b in zip(eager, compiled, strict=True):
        assert iou(a > 0, b > 0) >= 0.999


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


_COMPILE_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from torch._dynamo.utils import counters
from ml_service.serving.engine import Engine
from ml_service.settings import EngineSettings
settings = EngineSettings(
    device="cpu", models=("hrnet",), max_batch_size=2, compile="on",
    compile_cache_dir=Path(sys.argv[1]), profiles_path=Path(sys.argv[2]),
)
with Engine.from_settings(settings):
    pass
print(json.dumps({
    "fxgraph_hit": counters["inductor"]["fxgraph_cache_hit"],
    "aot_hit": counters["aot_autograd"]["autograd_cache_hit"],
}))
"""


def test_a_restarted_worker_compiles_from_the_on_disk_cache(tmp_path: Path) -> None:
    """The second process finds both compiled graphs (batch 1, dynamic batch) in
    ``ML_COMPILE_CACHE_DIR``: inductor's graph cache and AOTAutograd's cache both hit, which is
    what makes a restart cheaper than the first start (docs/benchmarks.md "Worker cold start")."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    args = [sys.executable, "-c", _COMPILE_IN_A_FRESH_PROCESS, str(tmp_path / "inductor")]
    runs = []
    for i in range(2):
        profiles = tmp_path / f"batch_sizes-{i}.json"  # the recorded profile: no calibration
        shutil.copy(Path(__file__).parents[2] / "batch_sizes.json", profiles)
        done = subprocess.run(
            [*args, str(profiles)], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, restarted = runs
    assert first == {"fxgraph_hit": 0, "aot_hit": 0}
    assert restarted["fxgraph_hit"] >= 2 and restarted["aot_hit"] >= 2
