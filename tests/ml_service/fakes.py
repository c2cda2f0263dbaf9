"""Test doubles for what this machine lacks: a GPU's memory readings and device OOM.

Everything else in the engine tests is real (torch modules, threads, the ledger)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from ml_service.runtimes.base import DeviceOutOfMemory
from ml_service.runtimes.torch import TorchRuntime
from ml_service.serving.device import MB, MemoryReading


class FixedProbe:
    """A device with settable memory readings."""

    kind = "cuda"
    key = "Test GPU 1GB"
    torch_device = torch.device("cpu")

    def __init__(self, total_mb: int = 1024, free_mb: int = 1024, process_mb: int = 0) -> None:
        self.total, self.free, self.process = total_mb * MB, free_mb * MB, process_mb * MB

    def read(self) -> MemoryReading:
        return MemoryReading(self.total, self.free, self.process)


class ScaleModule(torch.nn.Module):
    """(N, 1, H, W) → logits ``x`` so that sigmoid(logit) is checkable per item."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class RecordingRuntime(TorchRuntime):
    """A real TorchRuntime that records batch sizes and can inject failures."""

    def __init__(
        self,
        oom_above: int | None = None,
        fail_if: Callable[[np.ndarray], bool] | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        super().__init__(ScaleModule(), torch.device("cpu"))
        self.sizes: list[int] = []
        self.oom_above = oom_above
        self.fail_if = fail_if
        self.barrier = barrier
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        with self._lock:
            self.sizes.append(len(batch))
        if self.barrier is not None:
            self.barrier.wait()
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise DeviceOutOfMemory(f"injected: batch {len(batch)} > {self.oom_above}")
        if self.fail_if is not None and any(self.fail_if(item) for item in batch):
            raise RuntimeError("injected failure for a poisoned item")
        return super().run(batch, thresholds)
