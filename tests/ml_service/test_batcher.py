from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ml_service.errors import EngineClosed, InvalidImage, OutOfMemory
from ml_service.profiles import ModelProfile
from ml_service.serving.batcher import BatchOutput, DynamicBatcher, busy_ms
from ml_service.serving.sizer import BatchSizer, MemoryLedger
from tests.ml_service.fakes import FixedProbe, RecordingRuntime

SHAPE = (1, 8, 8)
LONG = 30.0  # seconds: a delay that never expires within a test


def make(
    backend: RecordingRuntime,
    *,
    ceiling: int = 4,
    delay_s: float = LONG,
    concurrency: int = 1,
    slope_mb: float = 1.0,
    free_mb: int = 1024,
    increase_after: int = 2,
) -> tuple[DynamicBatcher, BatchSizer]:
    ledger = MemoryLedger(FixedProbe(free_mb=free_mb))
    sizer = BatchSizer(ledger, increase_after=increase_after)
    sizer.register("m", ModelProfile(0.0, slope_mb, ceiling, ceiling), max_batch_size=64)
    executor = ThreadPoolExecutor(concurrency)
    batcher = DynamicBatcher(
        "m",
        backend,
        sizer,
        executor,
        threading.Semaphore(concurrency),
        item_shape=SHAPE,
        max_queue_delay_s=delay_s,
    )
    return batcher, sizer


def item(value: float) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


def expected(value: float) -> float:
    return float(1 / (1 + np.exp(-value)))


def test_items_from_concurrent_callers_form_one_full_batch() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=4)
    with ThreadPoolExecutor(4) as callers:
        futures = list(callers.map(lambda v: batcher.submit(item(v)), [0.0, 1.0, 2.0, 3.0]))
    outs = [f.result(timeout=10) for f in futures]
    assert backend.sizes == [4]
    for v, out in zip([0.0, 1.0, 2.0, 3.0], outs, strict=True):
        assert out.batch_size == 4
        assert out.prob.shape == (8, 8)
        assert np.allclose(out.prob, expected(v))
    batcher.close()


def test_partial_batch_goes_when_oldest_item_waited_the_delay() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=8, delay_s=0.0)
    assert batcher.submit(item(0.5)).result(timeout=10).batch_size == 1
    batcher.close()


def test_more_items_than_ceiling_split_into_ceiling_sized_batches() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=4, delay_s=LONG)
    futures = [batcher.submit(item(float(v))) for v in range(8)]
    for f in futures:
        f.result(timeout=10)
    assert backend.sizes == [4, 4]
    batcher.close()


def test_bad_item_fails_alone_at_submit() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=2)
    bad_shape = batcher.submit(np.zeros((1, 4, 4), np.float32))
    bad_dtype = batcher.submit(np.zeros(SHAPE, np.float64))
    bad_nan = batcher.submit(item(np.nan))
    good = [batcher.submit(item(1.0)), batcher.submit(item(2.0))]
    for bad in (bad_shape, bad_dtype, bad_nan):
        with pytest.raises(InvalidImage):
            bad.result(timeout=1)
    assert [g.result(timeout=10).batch_size for g in good] == [2, 2]
    batcher.close()


def test_item_that_breaks_its_batch_fails_alone_and_batch_mates_succeed() -> None:
    backend = RecordingRuntime(fail_if=lambda x: bool(x.flat[0] == 13.0))
    batcher, _ = make(backend, ceiling=4)
    futures = [batcher.submit(item(v)) for v in (1.0, 13.0, 2.0, 3.0)]
    with pytest.raises(Exception, match="injected failure"):
        futures[1].result(timeout=10)
    for f, v in zip([futures[0], futures[2], futures[3]], (1.0, 2.0, 3.0), strict=True):
        assert np.allclose(f.result(timeout=10).prob, expected(v))
    assert backend.sizes[0] == 4 and sorted(backend.sizes[1:]) == [1, 1, 1, 1]
    batcher.close()


def test_out_of_memory_splits_batch_lowers_ceiling_and_loses_nothing() -> None:
    backend = RecordingRuntime(oom_above=2)
    batcher, sizer = make(backend, ceiling=8, increase_after=1000)
    futures = [batcher.submit(item(float(v))) for v in range(8)]
    for v, f in enumerate(futures):
        assert np.allclose(f.result(timeout=10).prob, expected(float(v)))
    assert backend.sizes[:3] == [8, 4, 2]  # 8 OOM → 4 OOM → 2 ok ...
    assert sizer.ceiling("m") == 2
    # the next full batch respects the lowered ceiling: no further OOM
    backend.sizes.clear()
    for f in [batcher.submit(item(0.0)) for _ in range(2)]:
        f.result(timeout=10)
    assert backend.sizes == [2]
    batcher.close()


def test_ceiling_grows_back_after_successes() -> None:
    backend = RecordingRuntime()
    batcher, sizer = make(backend, ceiling=4)
    sizer.on_oom("m", 4)
    assert sizer.ceiling("m") == 2
    for _ in range(2):  # increase_after=2 successes at the ceiling
        for f in [batcher.submit(item(0.0)) for _ in range(2)]:
            f.result(timeout=10)
    assert sizer.ceiling("m") == 3
    batcher.close()


def test_single_item_that_cannot_fit_fails_with_out_of_memory_others_survive() -> None:
    backend = RecordingRuntime(oom_above=0)
    batcher, _ = make(backend, ceiling=1, delay_s=0.0)
    with pytest.raises(OutOfMemory):
        batcher.submit(item(1.0)).result(timeout=10)
    backend.oom_above = None
    assert batcher.submit(item(1.0)).result(timeout=10).batch_size == 1
    batcher.close()


def test_no_lock_two_batches_run_at_the_same_time() -> None:
    # Each batch waits at a barrier for a second batch: it passes only if both are in flight.
    barrier = threading.Barrier(2, timeout=10)
    backend = RecordingRuntime(barrier=barrier)
    batcher, _ = make(backend, ceiling=2, concurrency=2)
    futures = [batcher.submit(item(0.0)) for _ in range(4)]
    assert all(f.result(timeout=15).batch_size == 2 for f in futures)
    batcher.close()


def test_batch_size_shrinks_to_free_memory() -> None:
    backend = RecordingRuntime()
    # 3 MB free, 1 MB per image: a queue of 9 with ceiling 8 goes out as 3 + 3 + 3
    batcher, sizer = make(backend, ceiling=8, free_mb=3)
    assert sizer.allowed("m") == 3
    for f in [batcher.submit(item(0.0)) for _ in range(9)]:
        f.result(timeout=10)
    assert backend.sizes == [3, 3, 3]
    batcher.close()


def test_close_runs_queued_items_then_refuses_new_ones() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=16, delay_s=LONG)
    futures = [batcher.submit(item(0.0)) for _ in range(3)]
    batcher.close(timeout=10)
    assert all(f.result(timeout=10).batch_size == 3 for f in futures)
    with pytest.raises(EngineClosed):
        batcher.submit(item(0.0))


def test_cancelled_item_is_skipped() -> None:
    backend = RecordingRuntime()
    batcher, _ = make(backend, ceiling=3, delay_s=LONG)
    first = batcher.submit(item(0.0))
    assert first.cancel()
    rest = [batcher.submit(item(0.0)) for _ in range(3)]
    assert all(f.result(timeout=10).batch_size == 3 for f in rest)
    batcher.close()


def _out(started: float, ms: float) -> BatchOutput:
    return BatchOutput(np.zeros((1, 1), np.float32), 1, 0.0, ms, started)


def test_busy_time_counts_a_shared_batch_once_and_overlapping_batches_as_their_union() -> None:
    same_batch = [_out(10.0, 200.0)] * 4  # four tiles of one batch of 200 ms
    assert busy_ms(same_batch) == pytest.approx(200.0)
    overlapping = [_out(0.0, 100.0), _out(0.05, 100.0), _out(1.0, 50.0)]
    assert busy_ms(overlapping) == pytest.approx(150.0 + 50.0)
    assert busy_ms([]) == 0.0
