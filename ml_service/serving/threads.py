"""Intra-op thread counts, set deliberately from the cores this process is given.

A worker process may be pinned to a few cores (``taskset``, cpusets) or limited by a cgroup CPU
quota (``docker --cpus``); the libraries' own defaults look at the whole machine and oversubscribe
it. Default for both PyTorch and ONNX Runtime: the cores given (affinity, capped by the quota),
shared by the batches that may run at once on a CPU (``ML_BATCH_CONCURRENCY``, 1 by default), so
``concurrency × threads ≤ cores``. ``ML_TORCH_THREADS`` / ``ML_ONNX_THREADS`` override.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ml_service.settings import EngineSettings

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole cores allowed by a cgroup v2 quota (``"200000 100000"`` → 2); None if unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cpu_max)
    return min(cores, limit) if limit else cores


@dataclass(frozen=True)
class ThreadPlan:
    torch: int
    onnx: int  # ONNX Runtime's intra-op threads, and OpenVINO's per stream
    concurrency: int = 1  # batches that may run at once (OpenVINO's streams)


def thread_plan(settings: EngineSettings, device_kind: str, cores: int | None = None) -> ThreadPlan:
    """Intra-op threads per library for this process (see the module docstring)."""
    cores = cores or available_cores()
    concurrency = settings.batch_concurrency or (2 if device_kind == "cuda" else 1)
    default = max(1, cores // concurrency) if device_kind == "cpu" else cores
    return ThreadPlan(
        torch=settings.torch_threads or default,
        onnx=settings.onnx_threads or default,
        concurrency=concurrency,
    )


def apply_torch_threads(plan: ThreadPlan) -> None:
    """PyTorch's intra-op pool is process-wide; ONNX Runtime's is set per session."""
    if torch.get_num_threads() != plan.torch:
        torch.set_num_threads(plan.torch)
