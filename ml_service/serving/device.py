"""Device probing: which device to run on, and how much memory it has free right now.

GPUs are read through NVML (``pynvml`` from nvidia-ml-py) when a driver is present, else through
``torch.cuda.mem_get_info``; the CPU through psutil. Readings are cached for a short time so the
batch sizer can ask on every batch without putting a sampling call on the hot path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import psutil
import torch

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryReading:
    """Bytes on one device: ``total``, ``free`` now, and ``process`` (used by this process)."""

    total: int
    free: int
    process: int

    @property
    def foreign(self) -> int:
        """Memory used by other processes (never negative)."""
        return max(0, self.total - self.free - self.process)


class DeviceProbe(Protocol):
    kind: str  # "cpu" or "cuda"
    key: str  # profile key in batch_sizes.json, e.g. "cpu-2core", "NVIDIA H100 80GB HBM3"
    torch_device: torch.device

    def read(self) -> MemoryReading: ...


def cpu_device_key() -> str:
    return f"cpu-{len(os.sched_getaffinity(0))}core"


class CpuProbe:
    """Host memory: total, available (psutil) and this process's resident set."""

    kind = "cpu"

    def __init__(self) -> None:
        self.key = cpu_device_key()
        self.torch_device = torch.device("cpu")
        self._proc = psutil.Process()

    def read(self) -> MemoryReading:
        vm = psutil.virtual_memory()
        return MemoryReading(
            total=vm.total, free=vm.available, process=self._proc.memory_info().rss
        )


class Nvml:
    """Lazy, process-wide NVML session; ``available`` is False without a GPU driver."""

    _lock = threading.Lock()
    _state: bool | None = None

    @classmethod
    def available(cls) -> bool:
        with cls._lock:
            if cls._state is None:
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    cls._state = True
                except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                    log.debug("NVML unavailable: %s", exc)
                    cls._state = False
            return cls._state


def nvml_gpus() -> list[dict[str, Any]]:
    """One dict per GPU from NVML (name, memory, utilisation); empty without a driver."""
    if not Nvml.available():
        return []
    import pynvml

    gpus = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        util = pynvml.nvmlDeviceGetUtilizationRates(h)
        name = pynvml.nvmlDeviceGetName(h)
        gpus.append(
            {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_mb": mem.total // MB,
                "memory_used_mb": mem.used // MB,
                "memory_free_mb": mem.free // MB,
                "utilization_gpu_pct": util.gpu,
            }
        )
    return gpus


class CudaProbe:
    """One CUDA device; NVML when present (sees other processes), else ``mem_get_info``."""

    kind = "cuda"

    def __init__(self, index: int) -> None:
        self.index = index
        self.torch_device = torch.device("cuda", index)
        self.key = torch.cuda.get_device_name(index)
        self._handle: Any = None
        if Nvml.available():
            import pynvml

            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> MemoryReading:
        process = torch.cuda.memory_reserved(self.index)
        if self._handle is not None:
            import pynvml

            mem = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            return MemoryReading(total=int(mem.total), free=int(mem.free), process=process)
        free, total = torch.cuda.mem_get_info(self.index)
        return MemoryReading(total=total, free=free, process=process)


class CachedProbe:
    """Wraps a probe; ``read`` returns a reading at most ``ttl_s`` old."""

    def __init__(self, probe: DeviceProbe, ttl_s: float = 0.25) -> None:
        self.probe = probe
        self.kind = probe.kind
        self.key = probe.key
        self.torch_device = probe.torch_device
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._last: MemoryReading | None = None

    def read(self) -> MemoryReading:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._at > self._ttl:
                self._last = self.probe.read()
                self._at = now
            return self._last


def resolve_device(setting: str) -> str:
    """``auto`` → ``cuda:0`` when CUDA works, else ``cpu``; ``cuda`` → ``cuda:0``."""
    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        return "cuda:0"
    return setting


def make_probe(device: str) -> DeviceProbe:
    resolved = resolve_device(device)
    if resolved == "cpu":
        return CpuProbe()
    if not torch.cuda.is_available():
        raise RuntimeError(f"ML_DEVICE={device} but CUDA is not available in this process")
    return CudaProbe(int(resolved.split(":")[1]))
