"""``scripts/gpu_check`` without a GPU, its step runner, and the wheel list of ``make
gpu-wheels`` (what a bare GPU host lacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.gpu_host import CHECK, closure, needed
from scripts.gpu_report import Runner, pytest_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU: the check would run")
def test_without_a_gpu_it_says_so_writes_the_report_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check")],
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no GPU" in done.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["gpu"] is None and report["steps"] == []
    assert "no GPU" in (tmp_path / "gpu_check.md").read_text()


def test_a_step_over_its_time_is_killed_and_reported(tmp_path: Path) -> None:
    runner = Runner(tmp_path, budget_s=60, env=dict(os.environ), min_step_s=1)
    quick = runner.run("quick", [sys.executable, "-c", "print('hello')"], 30)
    slow = runner.run("slow one", [sys.executable, "-c", "import time; time.sleep(60)"], 2)
    assert (quick.status, slow.status) == ("passed", "timed out")
    assert "hello" in quick.tail and (tmp_path / "slow-one.log").is_file()
    late = Runner(tmp_path, budget_s=0.5, env=dict(os.environ), min_step_s=1)
    assert late.run("late", [sys.executable, "-c", "pass"], 30).status == "skipped"


def test_pytest_summaries_are_read_from_quiet_and_full_output() -> None:
    assert pytest_summary("....\n17 skipped in 4.17s") == "17 skipped in 4.17s"
    assert pytest_summary("=== 3 passed, 1 failed in 2.00s ===") == "3 passed, 1 failed in 2.00s"


def test_the_wheels_are_what_the_checks_need_beyond_the_host() -> None:
    shipped = set(needed())
    assert {"segmentation-models-pytorch", "pydantic-settings", "pytest", "nvidia-ml-py"} <= shipped
    assert {"fastapi", "celery", "asyncpg", "python-socketio", "aiohttp"} <= shipped
    assert not shipped & {"torch", "torchvision", "timm", "numpy", "scikit-image", "scipy"}
    assert set(needed(service=False)) < shipped
    assert closure(CHECK) >= set(needed(service=False))
