from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_service.profiles import (
    SCHEMA_VERSION,
    BatchPoint,
    ModelProfile,
    ProfileBook,
    ProfileFileError,
    best_batch_size,
    fit_line,
)
from ml_service.serving.device import MB, CachedProbe
from ml_service.serving.sizer import BatchSizer, MemoryLedger
from tests.ml_service.fakes import FixedProbe


def test_fit_line_recovers_intercept_and_slope() -> None:
    points = [BatchPoint(n, 100 + 40 * n, 10.0 * n) for n in (1, 2, 4, 8)]
    intercept, slope = fit_line(points)
    assert intercept == pytest.approx(100, abs=0.01)
    assert slope == pytest.approx(40, abs=0.01)


def test_fit_line_stays_above_every_measured_point() -> None:
    points = [BatchPoint(1, 150, 1), BatchPoint(2, 160, 1), BatchPoint(4, 260, 1)]
    intercept, slope = fit_line(points)
    for p in points:
        assert intercept + slope * p.batch_size >= p.peak_mb - 1e-9


def test_best_batch_size_is_highest_throughput_within_budget() -> None:
    points = [
        BatchPoint(1, 100, 10.0),  # 100 img/s
        BatchPoint(2, 200, 12.0),  # 167 img/s
        BatchPoint(4, 400, 16.0),  # 250 img/s
        BatchPoint(8, 800, 30.0),  # 267 img/s but over a 500 MB budget
    ]
    assert best_batch_size(points, budget_mb=500) == 4
    assert best_batch_size(points, budget_mb=10_000) == 8


def test_best_batch_size_prefers_smaller_batch_when_batching_gains_nothing() -> None:
    # the CPU case: batch 4 takes 4x as long as batch 1
    points = [BatchPoint(1, 50, 100.0), BatchPoint(2, 100, 200.0), BatchPoint(4, 200, 401.0)]
    assert best_batch_size(points, budget_mb=10_000) == 1


def test_ledger_budget_subtracts_foreign_memory_safety_and_weights() -> None:
    # 1000 MB GPU, 300 MB free, our process holds 200 MB → others hold 500 MB
    probe = FixedProbe(total_mb=1000, free_mb=300, process_mb=200)
    ledger = MemoryLedger(probe, safety_bytes=50 * MB)
    ledger.add_resident(100 * MB)
    assert ledger.capacity() == (1000 - 500 - 50 - 100) * MB
    probe.free = 100 * MB  # a foreign process takes 200 MB more: noticed on the next read
    assert ledger.capacity() == (1000 - 700 - 50 - 100) * MB


def test_ledger_limit_caps_usable_memory() -> None:
    ledger = MemoryLedger(FixedProbe(total_mb=1000, free_mb=1000), limit_bytes=400 * MB)
    assert ledger.capacity() == 400 * MB


def test_reserve_and_release_and_force_if_idle() -> None:
    ledger = MemoryLedger(FixedProbe(total_mb=100, free_mb=100))
    woken = []
    ledger.subscribe(lambda: woken.append(1))
    a = ledger.try_reserve(60 * MB)
    assert a is not None
    assert ledger.try_reserve(60 * MB) is None
    assert ledger.try_reserve(60 * MB, force_if_idle=True) is None  # not idle
    a.release()
    a.release()  # idempotent
    assert ledger.reserved_bytes == 0 and woken == [1]
    big = ledger.try_reserve(500 * MB, force_if_idle=True)  # idle: one try allowed
    assert big is not None
    big.release()


def test_sizer_allowed_is_largest_batch_that_fits_free_memory_within_ceiling() -> None:
    ledger = MemoryLedger(FixedProbe(total_mb=1000, free_mb=1000))
    sizer = BatchSizer(ledger)
    sizer.register("hrnet", ModelProfile(100.0, 50.0, best_batch_size=12, max_batch_size=16), 32)
    sizer.register("unet", ModelProfile(0.0, 400.0, best_batch_size=8, max_batch_size=8), 32)
    assert sizer.allowed("hrnet") == 12  # ceiling, 700 MB ≤ 1000
    assert sizer.allowed("unet") == 2  # 800 MB
    got = sizer.reserve("unet", 8)
    assert got is not None and got[0] == 2
    # both models share the ledger: unet's 800 MB leaves hrnet room for (200-100)/50 = 2
    assert sizer.allowed("hrnet") == 2
    got[1].release()
    assert sizer.allowed("hrnet") == 12


def test_settings_cap_the_ceiling() -> None:
    sizer = BatchSizer(MemoryLedger(FixedProbe()))
    sizer.register("m", ModelProfile(0.0, 1.0, best_batch_size=12, max_batch_size=16), 4)
    assert sizer.ceiling("m") == 4


def test_aimd_ceiling() -> None:
    sizer = BatchSizer(MemoryLedger(FixedProbe()), increase_after=3)
    sizer.register("m", ModelProfile(0.0, 1.0, best_batch_size=8, max_batch_size=8), 32)
    sizer.on_oom("m", 8)
    assert sizer.ceiling("m") == 4
    sizer.on_oom("m", 4)
    sizer.on_oom("m", 1)
    assert sizer.ceiling("m") == 1
    for _ in range(3):
        sizer.on_success("m", 1)
    assert sizer.ceiling("m") == 2
    for _ in range(100):
        sizer.on_success("m", sizer.ceiling("m"))
    assert sizer.ceiling("m") == 8  # never above the best batch size


def test_cached_probe_rereads_after_ttl() -> None:
    probe = FixedProbe(free_mb=100)
    cached = CachedProbe(probe, ttl_s=3600)
    assert cached.read().free == 100 * MB
    probe.free = 0
    assert cached.read().free == 100 * MB  # cached
    assert CachedProbe(probe, ttl_s=0).read().free == 0


def test_profile_book_round_trip_keeps_other_devices(tmp_path: Path) -> None:
    path = tmp_path / "batch_sizes.json"
    book = ProfileBook()
    gpu = ModelProfile(435.0, 30.0, 12, 16, points=(BatchPoint(12, 795.0, 700.0),))
    book.put("NVIDIA RTX A5000", "hrnet/full:torch", gpu)
    book.save(path)
    again = ProfileBook.load(path)
    cpu = ModelProfile(10.0, 5.0, 1, 4, input_size=(256, 256))
    again.put("cpu-2core", "hrnet/small:torch", cpu)
    again.save(path)
    final = ProfileBook.load(path)
    assert final.get("NVIDIA RTX A5000", "hrnet/full:torch") == gpu
    assert final.get("cpu-2core", "hrnet/small:torch") == cpu
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_profile_book_refuses_other_schema_versions(tmp_path: Path) -> None:
    path = tmp_path / "batch_sizes.json"
    path.write_text(json.dumps({"schema_version": 99, "devices": {}}))
    with pytest.raises(ProfileFileError, match="schema_version 99"):
        ProfileBook.load(path)
    path.write_text("{not json")
    with pytest.raises(ProfileFileError):
        ProfileBook.load(path)


def test_missing_profile_file_is_an_empty_book(tmp_path: Path) -> None:
    assert ProfileBook.load(tmp_path / "none.json").devices == {}
