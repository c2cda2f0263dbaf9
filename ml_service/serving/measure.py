"""Measuring what one batch costs: peak memory and latency.

Peak memory is measured, not estimated:
- CUDA: ``torch.cuda.reset_peak_memory_stats`` then ``max_memory_allocated`` minus the bytes
  allocated before the run (weights excluded): the caching allocator's own high-water mark.
- CPU: the kernel's high-water mark of this process's resident set. ``/proc/self/clear_refs``
  (value 5) resets ``VmHWM`` to the current RSS; after the run ``VmHWM − VmRSS(before)`` is the
  peak the batch added. glibc is told to return freed memory (``malloc_trim``) first so memory
  cached from earlier batches does not hide the new peak. Where clear_refs cannot be written, a
  sampling thread reads RSS every millisecond instead (``method`` says which was used).
- Runtimes that allocate outside PyTorch's allocator on CUDA (ONNX Runtime): a sampling thread
  reads the device's used memory (``cudaMemGetInfo``) every millisecond; ONNX Runtime's arena is
  shrunk after every run (see ``ml_service.runtimes.onnxruntime``), so the rise is the batch's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True)
class PeakMeasurement:
    peak_bytes: int
    method: str


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    try:
        _libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass


def measure_cpu_peak(run: Callable[[], object]) -> PeakMeasurement:
    """Peak extra resident memory while ``run()`` executes on the CPU."""
    _trim()
    before = _status_kb("VmRSS")
    if _reset_hwm():
        run()
        return PeakMeasurement(max(0, _status_kb("VmHWM") - before) * 1024, "cpu-vmhwm")
    proc = psutil.Process()
    return PeakMeasurement(
        _sampled_rise(run, lambda: int(proc.memory_info().rss)), "cpu-rss-sampling"
    )


def _sampled_rise(run: Callable[[], object], read: Callable[[], int]) -> int:
    """Highest ``read()`` while ``run()`` executes (sampled every ms), minus the level before."""
    base = read()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, read())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(0, peak - base)


def measure_cuda_peak(run: Callable[[], object], device: torch.device) -> PeakMeasurement:
    """Peak bytes the caching allocator handed out during ``run()``, above the starting level."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return PeakMeasurement(
        max(0, torch.cuda.max_memory_allocated(device) - before), "cuda-max-memory-allocated"
    )


def measure_cuda_device_peak(run: Callable[[], object], device: torch.device) -> PeakMeasurement:
    """Peak rise of the device's used memory during ``run()`` (allocations outside torch)."""

    def used() -> int:
        free, total = torch.cuda.mem_get_info(device)
        return int(total - free)

    torch.cuda.synchronize(device)
    return PeakMeasurement(_sampled_rise(run, used), "cuda-device-used-sampling")


def measure_peak(
    run: Callable[[], object], device: torch.device, torch_allocator: bool = True
) -> PeakMeasurement:
    """Peak memory of ``run()``: on CUDA from torch's allocator when the runtime allocates
    through it (``torch_allocator``), else from the device's used memory; on the CPU, the
    process's resident high-water mark."""
    if device.type == "cuda":
        if torch_allocator:
            return measure_cuda_peak(run, device)
        return measure_cuda_device_peak(run, device)
    return measure_cpu_peak(run)


DEFAULT_BLOCK = 5


def batch_sizes_up_to(limit: int) -> list[int]:
    """The batch sizes a sweep measures: 1, 2, 4, ... up to ``limit``."""
    return [2**i for i in range(limit.bit_length()) if 2**i <= limit]


"""Calls of one runtime timed in a row per round (the bench's ``--block``, the profiler's
batch-size sweep): a worker runs one model on one runtime call after call, and several
libraries' thread pools on a few cores slow whichever runs right after another (2026-11-24,
2 cores: OpenVINO hrnet/small 4.3 ms per call alone, 8.4 ms alternating call by call with
torch and ONNX Runtime)."""


def median_latencies_s(
    runs: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    *,
    block: int = 1,
) -> dict[str, float]:
    """Median wall time of one call of each ``run`` over ``repeats`` rounds; in each round every
    run is called once untimed, then ``block`` times timed (the round's figure is their mean).
    Interleaving makes a machine whose load changes (a shared CPU) slow them all alike; the
    untimed call absorbs the switch (another library's worker threads still spinning, cold
    caches) so it is not charged to the next run. ``block`` > 1 times each run over several
    calls in a row, as a worker serving one model runs it, rather than alternating weight
    copies call by call (the bench uses 5)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    calls = max(1, block)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(max(1, repeats)):
        for key, run in runs.items():
            run()
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            sync()
            times[key].append((time.perf_counter() - t0) / calls)
    return {key: statistics.median(t) for key, t in times.items()}
