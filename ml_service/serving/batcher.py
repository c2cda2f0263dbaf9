"""Dynamic batching across callers (Triton-style), one batcher per model, no inference lock.

Callers ``submit`` one preprocessed item and get a ``Future``. A collector thread forms a batch
when the queue holds as many items as the sizer's ceiling, or when the oldest item has waited
``max_queue_delay_s``; it then reserves the batch's predicted peak memory in the shared ledger,
takes an execution slot of the device, and hands the batch to the device's executor. Several
batches (of this or other models) run at once when slots and memory allow.

Failure handling: an item with the wrong shape or non-finite values fails at submit, alone. A
batch that raises is retried item by item so only the bad item fails. A device out-of-memory
error halves the batch and retries both halves (lowering the model's ceiling), down to one
item; only an item that cannot run alone fails. Every future is resolved in ``finally``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
import torch

from ml_service.errors import EngineClosed, EngineError, InvalidImage, OutOfMemory
from ml_service.runtimes.base import DeviceOutOfMemory, InferenceRuntime
from ml_service.serving.sizer import BatchSizer, Reservation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutput:
    """One item's output and how it was produced."""

    prob: np.ndarray  # (H, W) float32 probability, or uint8 mask when thresholded on the device
    batch_size: int
    queued_ms: float
    inference_ms: float
    started: float = 0.0  # time.monotonic() when its batch started running


def busy_ms(outputs: list[BatchOutput]) -> float:
    """Wall-clock milliseconds during which at least one of the batches of ``outputs`` ran.

    An image's tiles may share one batch (each output then carries that batch's whole time) or
    run in batches that overlap, so summing ``inference_ms`` would count the same time twice;
    this is the length of the union of the batches' intervals, which is never longer than the
    wall time from the first batch's start to the last one's end.
    """
    spans = sorted({(o.started, o.started + o.inference_ms / 1000) for o in outputs})
    total, end = 0.0, -float("inf")
    for lo, hi in spans:
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return 1000 * total


Item = np.ndarray | torch.Tensor  # host array, or a tensor already on the runtime's device


@dataclass(eq=False)
class _Request:
    data: Item
    future: Future[BatchOutput]
    threshold: float | None = None
    enqueued: float = field(default_factory=time.monotonic)


BatchListener = Callable[[str, int, float], None]  # (model, batch size, seconds)


class DynamicBatcher:
    def __init__(
        self,
        model: str,
        runtime: InferenceRuntime,
        sizer: BatchSizer,
        executor: Executor,
        slots: threading.Semaphore,
        *,
        item_shape: tuple[int, ...],
        max_queue_delay_s: float,
        on_batch: BatchListener | None = None,
    ) -> None:
        self.model = model
        self.runtime = runtime
        self.sizer = sizer
        self.item_shape = item_shape
        self.max_queue_delay_s = max_queue_delay_s
        self._executor = executor
        self._slots = slots
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._closed = False
        self._in_flight = 0
        self._thread = threading.Thread(target=self._collect, name=f"batcher-{model}", daemon=True)
        sizer.ledger.subscribe(self._wake)
        self._thread.start()

    # ---- caller side -------------------------------------------------------------------

    def submit(self, item: Item, threshold: float | None = None) -> Future[BatchOutput]:
        """Queue one ``item_shape`` float32 item; the future resolves to its ``BatchOutput``.

        The item is a host array, or (a runtime that ``accepts_device_tensors``: torch) a
        tensor on the runtime's device, made there by ``ml_service.imaging.device_preprocess``;
        a batch is all of one kind.

        With a ``threshold`` the output may come back as the uint8 mask ``prob > threshold``
        (thresholded on the device): when every item of its batch has one and the runtime
        ``returns_masks``; otherwise it is the float32 probability map."""
        future: Future[BatchOutput] = Future()
        problem = self._check(item)
        if problem:
            future.set_exception(InvalidImage(problem))
            return future
        with self._cond:
            if self._closed:
                raise EngineClosed(f"batcher {self.model} is closed")
            self._queue.append(_Request(item, future, threshold))
            self._cond.notify()
        return future

    def _check(self, item: Item) -> str | None:
        if isinstance(item, torch.Tensor):
            return self._check_tensor(item)
        if not isinstance(item, np.ndarray) or item.shape != self.item_shape:
            shape = getattr(item, "shape", None)
            return f"model input must have shape {self.item_shape}, got {shape}"
        if item.dtype != np.float32:
            return f"model input must be float32, got {item.dtype}"
        if not np.isfinite(item).all():
            return "model input contains NaN or infinite values"
        return None

    def _check_tensor(self, item: torch.Tensor) -> str | None:
        if not self.runtime.accepts_device_tensors:
            return f"the {self.runtime.name} runtime takes host arrays, not tensors"
        if item.device != self.runtime.device:
            return f"a tensor input must be on the runtime's device, got {item.device}"
        if tuple(item.shape) != self.item_shape or item.dtype != torch.float32:
            return f"model input must be float32 {self.item_shape}, got {item.dtype} {item.shape}"
        # no finiteness check here: on a GPU it would wait for the device once per tile. Tensor
        # inputs come from ml_service.imaging.device_preprocess, whose pixels the CPU stage checked
        # finite (cpu_stages._decoded), and normalisation keeps them so
        return None

    def queue_depth(self) -> int:
        return len(self._queue)

    def in_flight(self) -> int:
        return self._in_flight

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work; queued items are still run. Joins the collector."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- collector ---------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _collect(self) -> None:
        while True:
            with self._cond:
                picked = self._next_batch()
            if picked is None:
                return
            items, reservation = picked
            try:
                self._executor.submit(self._run, items, reservation)
            except RuntimeError as exc:  # executor shut down under us
                self._finish(items, reservation, EngineClosed(f"executor stopped: {exc}"))

    def _next_batch(self) -> tuple[list[_Request], Reservation] | None:
        """Wait (holding ``_cond``) until a batch is due and fits; take it off the queue."""
        while True:
            while self._queue and self._queue[0].future.cancelled():
                self._queue.popleft()
            if not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
                continue
            waited = time.monotonic() - self._queue[0].enqueued
            # "full": as many as the ceiling, or as many as fit in the memory free now
            full = len(self._queue) >= max(1, self.sizer.allowed(self.model))
            if not (full or self._closed or waited >= self.max_queue_delay_s):
                self._cond.wait(self.max_queue_delay_s - waited)
                continue
            if self._slots.acquire(blocking=False):
                got = self.sizer.reserve(self.model, len(self._queue))
                if got is not None:
                    n, reservation = got
                    items = [self._queue.popleft() for _ in range(min(n, len(self._queue)))]
                    live = [r for r in items if r.future.set_running_or_notify_cancel()]
                    if live:
                        self._in_flight += len(live)
                        return live, reservation
                    reservation.release()
                self._slots.release()
            # no slot or no memory free: a release wakes us; the timeout re-reads the device
            # in case memory held by another process was freed.
            self._cond.wait(0.05)

    # ---- executor side -----------------------------------------------------------------

    def _run_runtime(self, data: list[Item], thresholds: np.ndarray | None) -> np.ndarray:
        """One batch through the runtime, thresholded there when it can (``returns_masks``)."""
        if not self.runtime.returns_masks:
            thresholds = None
        if all(isinstance(d, np.ndarray) for d in data):
            return self.runtime.run(np.stack(data), thresholds)
        if not self.runtime.accepts_device_tensors:  # _check lets no tensor through
            raise EngineError(f"{self.model}: the {self.runtime.name} runtime takes no tensors")
        batch = torch.stack([torch.as_tensor(d, device=self.runtime.device) for d in data])
        return self.runtime.run(batch, thresholds)

    def _run(self, items: list[_Request], reservation: Reservation) -> None:
        error: BaseException | None = None
        try:
            self._execute(items)
        except BaseException as exc:  # resolve every future, whatever happened
            error = exc
            raise
        finally:
            self._finish(items, reservation, error)

    def _finish(
        self, items: list[_Request], reservation: Reservation, error: BaseException | None
    ) -> None:
        for r in items:
            if not r.future.done():
                r.future.set_exception(
                    EngineError(f"batch aborted: {error!r}") if error else EngineClosed("aborted")
                )
        with self._cond:
            self._in_flight -= len(items)
        self._slots.release()
        reservation.release()  # notifies every batcher of the device

    def _execute(self, items: list[_Request]) -> None:
        thresholds = [r.threshold for r in items]
        limits = np.array(thresholds, np.float32) if None not in thresholds else None
        start = time.monotonic()
        try:
            out = self._run_runtime([r.data for r in items], limits)
        except DeviceOutOfMemory:
            self.runtime.release_cached_memory()
            self.sizer.on_oom(self.model, len(items))
            if len(items) == 1:
                log.warning("%s: one image does not fit in device memory", self.model)
                items[0].future.set_exception(
                    OutOfMemory(f"{self.model}: the image does not fit in device memory")
                )
                return
            half = len(items) // 2
            log.warning("%s: out of memory at batch %d, retrying halves", self.model, len(items))
            self._execute(items[:half])
            self._execute(items[half:])
            return
        except Exception as exc:
            if len(items) == 1:
                items[0].future.set_exception(
                    exc if isinstance(exc, EngineError) else EngineError(f"inference failed: {exc}")
                )
                return
            log.warning(
                "%s: batch of %d failed (%s); retrying one by one", self.model, len(items), exc
            )
            for r in items:
                self._execute([r])
            return
        seconds = time.monotonic() - start
        if len(out) != len(items):
            error = EngineError(f"runtime returned {len(out)} outputs for {len(items)} inputs")
            for r in items:
                r.future.set_exception(error)
            return
        self.sizer.on_success(self.model, len(items))
        if self._on_batch is not None:
            self._on_batch(self.model, len(items), seconds)
        for r, prob in zip(items, out, strict=True):
            r.future.set_result(
                BatchOutput(
                    prob=prob,
                    batch_size=len(items),
                    queued_ms=1000 * (start - r.enqueued),
                    inference_ms=1000 * seconds,
                    started=start,
                )
            )
