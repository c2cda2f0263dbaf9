"""The bench reports eager PyTorch vs the chosen backend and the lock-vs-batcher comparison for
each model in one run (figures themselves belong in docs/benchmarks.md, not in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_service.settings import EngineSettings
from ml_service.tools.bench import main, run

pytestmark = pytest.mark.slow  # loads, compiles or measures real models


def test_bench_reports_both_comparisons_per_model(tmp_path: Path, onnx_cache_dir: Path) -> None:
    settings = EngineSettings(
        device="cpu",
        models=("hrnet",),
        backend="onnxruntime",
        profiles_path=tmp_path / "batch_sizes.json",
        onnx_cache_dir=onnx_cache_dir,
    )
    report = run(settings, callers=2, images=4, repeats=2, eager_max_batch=4)
    (row,) = report["backends"]
    assert row["model"] == "hrnet/small" and row["backend"] == "onnxruntime"
    assert row["eager_ms_per_img"] > 0 and row["chosen_ms_per_img"] > 0
    assert row["speedup"] > 0 and row["engine_ratio"] > 0
    assert row["served_batch"] >= 1 and row["served_speedup"] > 0
    assert row["eager_ms_per_img_served_batch"] > 0 and row["chosen_ms_per_img_served_batch"] > 0
    # the served baseline is eager fp32 at its best batch size, 1 … 4 and the served one
    assert row["eager_best_batch"] in {1, 2, 4, row["served_batch"]}
    best = row["eager_best_ms_per_img"]
    assert best <= min(row["eager_ms_per_img"], row["eager_ms_per_img_served_batch"])
    assert row["served_speedup"] == pytest.approx(
        best / row["chosen_ms_per_img_served_batch"], rel=0.02
    )
    assert report["block"] == 5
    (batching,) = report["results"]
    assert batching["backend"] == "onnxruntime" and batching["batcher_img_s"] > 0
    assert report["device"].startswith("cpu-") and report["threads"]["onnx"] >= 1


def test_bench_fastpath_section_reports_every_stage(tmp_path: Path, onnx_cache_dir: Path) -> None:
    settings = EngineSettings(
        device="cpu",
        models=("hrnet",),
        precision="bf16",  # forced: the fast engine differs from the fp32 one
        profiles_path=tmp_path / "batch_sizes.json",
        onnx_cache_dir=onnx_cache_dir,
    )
    report = run(settings, callers=2, images=4, repeats=2, sections=("fastpath",))
    assert report["backends"] == [] and report["results"] == []
    (row,) = report["fastpath"]
    assert row["model"] == "hrnet/small" and row["fast_config"].startswith("bf16")
    for key in ("seed_lock_b1_fp32_img_s", "batcher_fp32_img_s", "batcher_fast_img_s"):
        assert row[key] > 0
    assert row["end_to_end_fast_img_s"] > 0 and row["e2e_over_engine"] > 0
    stages = row["stage_ms"]
    assert stages["h2d"] is None and stages["d2h"] is None  # no copies on the CPU
    for key in ("decode", "preprocess", "compute", "postprocess"):
        assert stages[key] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--block", "0"],
        ["--repeats", "-1"],
        ["--callers", "0"],
        ["--images", "x"],
        ["--eager-max-batch", "0"],
    ],
)
def test_bench_refuses_counts_below_one(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err
