"""What every inference runtime provides, and what the engine asks of it.

A runtime comes in two parts:

- the *runtime* (a class, registered by name in ``ml_service.runtimes.registry.RUNTIMES``):
  ``name``, ``available(device)`` (why it cannot run there, or None), ``build(request)`` (one
  model on one device) and ``forced_by(settings)`` (settings only this runtime honours, which
  make ``ML_BACKEND=auto`` pick it);
- the *built instance*, which runs batches: it takes a float32 batch ``(N, C, H, W)`` and returns
  foreground probabilities ``(N, H, W)`` float32, or, given per-item ``thresholds`` ``(N,)``
  float32 and ``returns_masks = True``, the uint8 masks ``prob > threshold``. Device
  out-of-memory is reported as :class:`DeviceOutOfMemory`, so the batcher can split and retry
  whatever the runtime. It is called from several threads at once without a lock. It configures
  itself from the model's profile (``apply_profile``: precision, compilation, ...), says which
  batch sizes to warm up, and describes its configuration (what ``engine.describe()`` shows and
  the profile records as its dtype).

:class:`RuntimeBase` gives every member a default, so a new runtime writes only what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ml_service.profiles import ModelProfile
from ml_service.settings import EngineSettings
from models.registry import ModelSpec


class DeviceOutOfMemory(Exception):
    """The device could not hold this batch (CUDA OOM, or host allocation failure)."""


@dataclass(frozen=True)
class BuildRequest:
    """Everything a runtime may need to put one model on a device."""

    spec: ModelSpec
    module: nn.Module  # on the CPU, in eval mode, with verified (or allowed random) weights
    weights_sha256: str | None  # None: random weights
    settings: EngineSettings
    device: torch.device
    threads: int  # intra-op threads for a runtime with its own pool (cores ÷ batches at once)
    streams: int  # batches that may run at once
    profile: ModelProfile | None = None  # recorded for this device, runtime and input size


class InferenceRuntime(Protocol):
    """One model on one device (see the module docstring)."""

    name: str
    device: torch.device
    resident_bytes: int
    returns_masks: bool  # thresholds on the device when given per-item thresholds
    accepts_device_tensors: bool  # takes a batch already on its device (torch tensors)
    torch_allocator: bool  # its device memory goes through torch's allocator (peak readings)

    def run(self, batch: Any, thresholds: np.ndarray | None = None) -> np.ndarray: ...

    def release_cached_memory(self) -> None: ...

    def apply_profile(self, profile: ModelProfile | None, settings: EngineSettings) -> str:
        """Configure from the recorded ``profile`` (None: none for this input size) or what
        ``settings`` force; returns why, for ``engine.describe()``."""
        ...

    def warm_up_sizes(self, ceiling: int) -> tuple[list[int], int]:
        """Batch sizes to run at warm-up, and how many times each."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """The configuration it runs (None: nothing to say)."""
        ...

    @property
    def label(self) -> str:
        """The configuration in short (``bf16+channels_last``; "" for none)."""
        ...

    @property
    def dtype_name(self) -> str:
        """The dtype it computes in, as a profile records it (``float32``, ``bfloat16``)."""
        ...


class Runtime(Protocol):
    """A registered runtime: a class whose instances are :class:`InferenceRuntime`."""

    name: str

    def available(self, device: torch.device) -> str | None: ...

    def build(self, request: BuildRequest) -> InferenceRuntime: ...

    def forced_by(self, settings: EngineSettings) -> str: ...

    def prepare_process(self, built: Iterable[InferenceRuntime], device_kind: str) -> None: ...


class RuntimeBase:
    """Defaults for a runtime class: host arrays in, probabilities out, nothing to configure,
    batch 1 and the ceiling warmed up once, float32, always available."""

    name: str = ""
    returns_masks: bool = False
    accepts_device_tensors: bool = False
    torch_allocator: bool = False

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        return None

    @classmethod
    def forced_by(cls, settings: EngineSettings) -> str:
        return ""

    @classmethod
    def prepare_process(cls, built: Iterable[InferenceRuntime], device_kind: str) -> None:
        """Process-wide switches once every model is configured (e.g. torch's TF32)."""

    def release_cached_memory(self) -> None:
        pass

    def apply_profile(self, profile: ModelProfile | None, settings: EngineSettings) -> str:
        return ""

    def warm_up_sizes(self, ceiling: int) -> tuple[list[int], int]:
        return sorted({1, ceiling}), 1

    def describe(self) -> dict[str, Any] | None:
        return None

    @property
    def label(self) -> str:
        return ""

    @property
    def dtype_name(self) -> str:
        return "float32"


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what stays resident on the device)."""
    return sum(
        t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
    )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid in place; exp over- or underflow at extreme logits gives exactly 0 or 1."""
    out = np.negative(logits, out=logits)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(out, out=out)
        out += 1.0
        return np.reciprocal(out, out=out)


def logits_to_output(logits: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """Host logits ``(N, H, W)`` float32 (overwritten) → probabilities, or uint8 masks
    ``prob > threshold`` given per-item ``thresholds`` ``(N,)``: the runtimes' common output."""
    prob = _sigmoid(logits)
    if thresholds is None:
        return prob
    limit = np.asarray(thresholds, np.float32)[:, None, None]
    return (prob > limit).astype(np.uint8)
