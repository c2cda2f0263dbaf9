"""How ``ml_service.serving.measure`` times and weighs a batch."""

from __future__ import annotations

import time

import numpy as np
import torch

from ml_service.serving.measure import batch_sizes_up_to, measure_cpu_peak, median_latencies_s


def test_latencies_interleave_runs_and_time_blocks_of_calls() -> None:
    calls: list[str] = []

    def runner(key: str, seconds: float):  # type: ignore[no-untyped-def]
        def run() -> None:
            calls.append(key)
            time.sleep(seconds)

        return run

    runs = {"slow": runner("slow", 0.004), "fast": runner("fast", 0.001)}
    latency = median_latencies_s(runs, torch.device("cpu"), repeats=3, block=4)
    # every round: one untimed call, then a block of 4 timed calls, of each run in turn
    assert calls == (["slow"] * 5 + ["fast"] * 5) * 3
    assert 0.004 <= latency["slow"] < 0.04 and 0.001 <= latency["fast"] < latency["slow"]


def test_cpu_peak_sees_a_large_temporary_allocation() -> None:
    def allocate() -> None:
        buffer = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        assert buffer.sum() > 0

    peak = measure_cpu_peak(allocate)
    assert peak.peak_bytes >= 60 * 2**20 and peak.method.startswith("cpu-")


def test_sweeps_measure_powers_of_two_up_to_the_limit() -> None:
    assert batch_sizes_up_to(8) == [1, 2, 4, 8]
    assert batch_sizes_up_to(6) == [1, 2, 4]
    assert batch_sizes_up_to(1) == [1]
    assert batch_sizes_up_to(256)[-1] == 256  # no cap: the profiler once stopped at 128
