"""Inference backends: what the batcher calls to run one batch on a device.

A backend takes a float32 batch ``(N, C, H, W)`` and returns foreground probabilities
``(N, H, W)`` float32. It reports device out-of-memory as ``DeviceOutOfMemory`` so the batcher
can split and retry whatever the backend; tests inject that failure through this interface.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
import torch
from torch import nn


class DeviceOutOfMemory(Exception):
    """The device could not hold this batch (CUDA OOM, or host allocation failure)."""


class InferenceBackend(Protocol):
    name: str
    device: torch.device
    resident_bytes: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def release_cached_memory(self) -> None: ...


def _is_cpu_oom(exc: RuntimeError) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


class TorchBackend:
    """Eager PyTorch in inference mode. No lock: an eval-mode module is safe to call from
    several threads; on CUDA each calling thread gets its own stream."""

    name = "torch"

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module = module.eval().to(device)
        self.device = device
        self.resident_bytes = sum(
            t.numel() * t.element_size()
            for t in list(self.module.parameters()) + list(self.module.buffers())
        )
        self._local = threading.local()

    def _stream(self) -> torch.cuda.Stream | None:
        if self.device.type != "cuda":
            return None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        return stream

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        prob = torch.sigmoid(self.module(x))[:, 0]
        return prob.float().cpu().numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            with torch.inference_mode():
                stream = self._stream()
                if stream is None:
                    return self._forward(batch)
                with torch.cuda.stream(stream):
                    out = self._forward(batch)
                stream.synchronize()
                return out
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceOutOfMemory(str(exc)) from exc
        except RuntimeError as exc:
            if _is_cpu_oom(exc):
                raise DeviceOutOfMemory(str(exc)) from exc
            raise

    def release_cached_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
