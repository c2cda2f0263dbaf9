"""The bench reports eager PyTorch vs the chosen backend and the lock-vs-batcher comparison for
each model in one run (figures themselves belong in docs/benchmarks.md, not in tests)."""

from __future__ import annotations

from pathlib import Path

from ml_service.bench import run
from ml_service.settings import EngineSettings


def test_bench_reports_both_comparisons_per_model(tmp_path: Path, onnx_cache_dir: Path) -> None:
    settings = EngineSettings(
        device="cpu",
        models=("hrnet",),
        backend="onnxruntime",
        profiles_path=tmp_path / "batch_sizes.json",
        onnx_cache_dir=onnx_cache_dir,
    )
    report = run(settings, callers=2, images=4, repeats=2)
    (row,) = report["backends"]
    assert row["model"] == "hrnet/small" and row["backend"] == "onnxruntime"
    assert row["eager_ms_per_img"] > 0 and row["chosen_ms_per_img"] > 0
    assert row["speedup"] > 0 and row["engine_ratio"] > 0
    (batching,) = report["results"]
    assert batching["backend"] == "onnxruntime" and batching["batcher_img_s"] > 0
    assert report["device"].startswith("cpu-") and report["threads"]["onnx"] >= 1
