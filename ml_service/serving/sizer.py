"""Memory-aware batch sizing: one ledger per device, one ceiling per model.

The ``MemoryLedger`` is the device's budget for batches, shared by every model in the process:
usable memory (device total minus what other processes use, capped by ``ML_MEMORY_LIMIT_GB``)
minus ``ML_MEMORY_SAFETY_MB`` minus resident weights. Each batch reserves its predicted peak
before it runs and releases it after; the usable figure is re-read (through a cached probe) on
every reservation, so memory taken by a foreign process shrinks the budget.

The ``BatchSizer`` turns a model's profile (``peak = intercept + slope × n``) into the largest
batch that fits what is free now, within the model's ceiling. The ceiling starts at the
profile's best-throughput batch size, halves on an out-of-memory error (multiplicative decrease)
and grows by one after a run of successes at the ceiling (additive increase).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ml_service.profiles import ModelProfile
from ml_service.serving.device import MB, DeviceProbe


class Reservation:
    """Bytes held in a ledger until ``release()`` (idempotent)."""

    def __init__(self, ledger: MemoryLedger, nbytes: int) -> None:
        self.ledger = ledger
        self.nbytes = nbytes
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.ledger._release(self.nbytes)


class MemoryLedger:
    """Budget of one device for batches in flight (bookkeeping only; never held while running)."""

    def __init__(
        self, probe: DeviceProbe, *, limit_bytes: int | None = None, safety_bytes: int = 0
    ) -> None:
        self.probe = probe
        self.limit_bytes = limit_bytes
        self.safety_bytes = safety_bytes
        self.resident_bytes = 0
        self.reserved_bytes = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def add_resident(self, nbytes: int) -> None:
        with self._lock:
            self.resident_bytes += nbytes

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called (outside the lock) after every release."""
        self._listeners.append(listener)

    def capacity(self) -> int:
        """Bytes batches may use in total right now."""
        reading = self.probe.read()
        usable = reading.total - reading.foreign
        if self.limit_bytes is not None:
            usable = min(usable, self.limit_bytes)
        return max(0, usable - self.safety_bytes - self.resident_bytes)

    def free(self) -> int:
        return max(0, self.capacity() - self.reserved_bytes)

    def try_reserve(self, nbytes: int, *, force_if_idle: bool = False) -> Reservation | None:
        """Reserve ``nbytes`` if they fit. ``force_if_idle``: also when nothing else is reserved
        (so a single item whose predicted peak exceeds the budget still gets one try)."""
        capacity = self.capacity()
        with self._lock:
            fits = self.reserved_bytes + nbytes <= capacity
            if fits or (force_if_idle and self.reserved_bytes == 0):
                self.reserved_bytes += nbytes
                return Reservation(self, nbytes)
        return None

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.reserved_bytes -= nbytes
        for listener in self._listeners:
            listener()

    def snapshot(self) -> dict[str, float]:
        return {
            "capacity_mb": self.capacity() / MB,
            "reserved_mb": self.reserved_bytes / MB,
            "resident_mb": self.resident_bytes / MB,
        }


@dataclass
class _ModelState:
    profile: ModelProfile
    ceiling: int
    max_ceiling: int
    successes: int = 0
    ooms: int = 0


class BatchSizer:
    """Per-model batch ceilings over one shared ``MemoryLedger``."""

    def __init__(self, ledger: MemoryLedger, *, increase_after: int = 8) -> None:
        self.ledger = ledger
        self.increase_after = increase_after
        self._models: dict[str, _ModelState] = {}
        self._lock = threading.Lock()

    def register(self, model: str, profile: ModelProfile, max_batch_size: int) -> None:
        """Start ``model`` at its best-throughput batch size, capped by ``max_batch_size``."""
        ceiling = max(1, min(profile.best_batch_size, max_batch_size))
        with self._lock:
            self._models[model] = _ModelState(profile, ceiling, ceiling)

    def profile(self, model: str) -> ModelProfile:
        return self._models[model].profile

    def ceiling(self, model: str) -> int:
        return self._models[model].ceiling

    def peak_bytes(self, model: str, batch_size: int) -> int:
        return int(self._models[model].profile.peak_mb(batch_size) * MB)

    def allowed(self, model: str) -> int:
        """Largest batch size within the ceiling whose predicted peak fits what is free now."""
        free = self.ledger.free()
        n = self.ceiling(model)
        while n > 0 and self.peak_bytes(model, n) > free:
            n -= 1
        return n

    def reserve(self, model: str, wanted: int) -> tuple[int, Reservation] | None:
        """Reserve memory for the largest batch ≤ ``min(wanted, ceiling)`` that fits now."""
        n = min(wanted, self.ceiling(model))
        while n > 0:
            res = self.ledger.try_reserve(self.peak_bytes(model, n), force_if_idle=n == 1)
            if res is not None:
                return n, res
            n -= 1
        return None

    def on_oom(self, model: str, batch_size: int) -> None:
        """Multiplicative decrease: the ceiling becomes half the batch that failed."""
        with self._lock:
            state = self._models[model]
            state.ceiling = max(1, min(state.ceiling, batch_size // 2))
            state.successes = 0
            state.ooms += 1

    def on_success(self, model: str, batch_size: int) -> None:
        """Additive increase after ``increase_after`` successes at the ceiling."""
        with self._lock:
            state = self._models[model]
            if batch_size < state.ceiling or state.ceiling >= state.max_ceiling:
                return
            state.successes += 1
            if state.successes >= self.increase_after:
                state.ceiling += 1
                state.successes = 0

    def describe(self, model: str) -> dict[str, object]:
        state = self._models[model]
        p = state.profile
        return {
            "ceiling": state.ceiling,
            "best_batch_size": p.best_batch_size,
            "intercept_mb": round(p.intercept_mb, 1),
            "slope_mb": round(p.slope_mb, 1),
            "profile_source": p.source,
            "backend": p.backend,
            "oom_events": state.ooms,
        }
