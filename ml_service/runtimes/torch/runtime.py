"""The PyTorch runtime: the model itself, in inference mode, on CUDA or the CPU, run as its
``ml_service.runtimes.torch.fastpath.FastPathConfig`` says (precision, channels_last,
torch.compile), configured from the profile's recorded choice or ``ML_PRECISION`` /
``ML_COMPILE``; it thresholds on the device and takes batches already there
(``ml_service.imaging.device_preprocess``).

torch.compile's cache lives in ``ML_COMPILE_CACHE_DIR`` (``TORCHINDUCTOR_CACHE_DIR`` when that
is set), so a restarted worker compiles from it in seconds. Compilation is not done in the
background while the model serves: torch.compile is not thread-safe against other module calls
(its tracer patches ``nn.Module.__call__`` process-wide while it traces; three models compiling
in background threads hung the worker).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ml_service.profiles import ModelProfile
from ml_service.runtimes.base import (
    BuildRequest,
    DeviceOutOfMemory,
    InferenceRuntime,
    RuntimeBase,
    module_bytes,
)
from ml_service.runtimes.torch import fastpath
from ml_service.runtimes.torch.fastpath import FP32, FastPathConfig
from ml_service.settings import EngineSettings

WARM_UP_RUNS_CUDA_GRAPHS = 3
"""Runs of each batch size of a model compiled with CUDA graphs (recorded on a later run than
the first); other compiled models compile on the first run of each size, so they run it once."""


def _is_cpu_oom(exc: RuntimeError) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


Batch = np.ndarray | torch.Tensor  # host arrays or tensors already on the device
StageTimes = dict[str, float | None]  # h2d, compute, d2h seconds (None: not on this device)


class TorchRuntime(RuntimeBase):
    """PyTorch in inference mode, run as its ``FastPathConfig`` says (fp32 eager by default).

    No lock: an eval-mode module is safe to call from several threads. On CUDA each calling
    thread gets its own compute stream and its own copy stream: the batch is staged in pinned
    host memory and copied with ``non_blocking`` on the copy stream, so one thread's copy
    overlaps another's compute (the engine runs ``ML_BATCH_CONCURRENCY`` batches at once, 2 on
    a GPU); the output (uint8 masks when thresholds are given) comes back through pinned memory.
    On the CPU the batch is used in place (no copies). A batch may also come as a tensor already
    on the device (preprocessed there: ``ml_service.imaging.device_preprocess``)."""

    name = "torch"
    returns_masks = True
    accepts_device_tensors = True
    torch_allocator = True

    @classmethod
    def build(cls, request: BuildRequest) -> TorchRuntime:
        """The module itself, moved to the device, in fp32 until configured."""
        return cls(request.module, request.device)

    @classmethod
    def forced_by(cls, settings: EngineSettings) -> str:
        """The fast-path settings that force something only this runtime does ("" if none):
        ``ML_PRECISION`` other than ``auto``/``fp32``, ``ML_COMPILE=on``."""
        forced = []
        if settings.precision not in ("auto", "fp32"):
            forced.append(f"ML_PRECISION={settings.precision}")
        if settings.compile == "on":
            forced.append("ML_COMPILE=on")
        return ", ".join(forced)

    @classmethod
    def prepare_process(cls, built: Iterable[InferenceRuntime], device_kind: str) -> None:
        """On CUDA: TF32 on when any torch model runs ``tf32``, off otherwise (process-wide)."""
        if device_kind != "cuda":
            return
        fastpath.set_tf32(
            any(isinstance(r, TorchRuntime) and r.config.precision == "tf32" for r in built)
        )

    def __init__(
        self, module: nn.Module, device: torch.device, config: FastPathConfig | None = None
    ) -> None:
        self.module = module.eval().to(device)
        self.device = device
        self.resident_bytes = module_bytes(self.module)
        self._local = threading.local()
        self.config = FP32
        self._call: Any = self.module
        if config is not None:
            self.configure(config)

    def configure(self, config: FastPathConfig) -> None:
        """Run from now on as ``config`` says (see
        ``ml_service.runtimes.torch.fastpath.prepare_module``); compilation happens on the
        first run of each batch size (the engine's warm-up)."""
        self._call = fastpath.prepare_module(self.module, config, self.device)
        self.config = config

    def apply_profile(self, profile: ModelProfile | None, settings: EngineSettings) -> str:
        """The configuration recorded in ``profile`` (measured by the profiler), or the one
        ``ML_PRECISION`` / ``ML_COMPILE`` force (``fastpath.resolve``)."""
        config, reason = fastpath.resolve(
            settings.precision, settings.compile, profile, self.device
        )
        if config.compile != "off":
            use_compile_cache(settings)
        if config != self.config:
            self.configure(config)
        return reason

    def warm_up_sizes(self, ceiling: int) -> tuple[list[int], int]:
        """1 and the ceiling once; compiled, every size the sizer may pick (1 … ceiling), once
        each, or :data:`WARM_UP_RUNS_CUDA_GRAPHS` times with CUDA graphs."""
        mode = self.config.compile
        if mode == "off":
            return sorted({1, ceiling}), 1
        runs = WARM_UP_RUNS_CUDA_GRAPHS if mode == "reduce-overhead" else 1
        return list(range(1, ceiling + 1)), runs

    def describe(self) -> dict[str, Any]:
        return self.config.to_json()

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def dtype_name(self) -> str:
        return self.config.dtype_name

    def _streams(self) -> tuple[torch.cuda.Stream, torch.cuda.Stream] | None:
        if self.device.type != "cuda":
            return None
        streams = getattr(self._local, "streams", None)
        if streams is None:
            streams = self._local.streams = (
                torch.cuda.Stream(self.device),
                torch.cuda.Stream(self.device),
            )
        return streams

    def _to_device(self, batch: Batch, copy_stream: torch.cuda.Stream | None) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            return self._on_device(batch)
        x = torch.from_numpy(batch)
        if copy_stream is None:
            return x
        host = x.pin_memory()  # caching host allocator: reused once the copy has finished
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(copy_stream):
            x = host.to(self.device, non_blocking=True)
        compute.wait_stream(copy_stream)
        x.record_stream(compute)
        return x

    def _on_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch already made on the device (``ml_service.imaging.device_preprocess``, stacked on
        the
        default stream): the compute stream waits for it and holds it until done."""
        x = batch.to(self.device)
        if self.device.type == "cuda":
            compute = torch.cuda.current_stream(self.device)
            compute.wait_stream(torch.cuda.default_stream(self.device))
            x.record_stream(compute)
        return x

    def _to_host(self, out: torch.Tensor) -> np.ndarray:
        if self.device.type != "cuda":
            return out.numpy()
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy()

    def _forward(
        self,
        batch: Batch,
        thresholds: np.ndarray | None,
        copy_stream: torch.cuda.Stream | None,
        times: StageTimes | None = None,
    ) -> np.ndarray:
        clock = _StageClock(self.device, times)
        x = self._to_device(batch, copy_stream)
        clock.lap("h2d")
        x = fastpath.to_input_format(x, self.config)
        fastpath.mark_step(self.config)
        with fastpath.autocast(self.config, self.device):
            logits = self._call(x)
        prob = torch.sigmoid(logits.float())[:, 0]
        if thresholds is not None:
            limit = torch.from_numpy(np.asarray(thresholds, np.float32)).to(self.device)
            prob = (prob > limit[:, None, None]).to(torch.uint8)
        clock.lap("compute")
        out = self._to_host(prob)
        clock.lap("d2h")
        return out

    def run(self, batch: Batch, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``(N, H, W)`` float32, or uint8 masks given ``thresholds`` ``(N,)``,
        for a host batch or one already on the device."""
        return self._run(batch, thresholds, None)

    def run_staged(
        self, batch: Batch, thresholds: np.ndarray | None = None
    ) -> tuple[np.ndarray, StageTimes]:
        """``run``, timing host→device copy, compute and device→host copy apart (the device is
        synchronised between them, so this is for the bench, not the hot path). On the CPU
        there are no copies: ``h2d`` and ``d2h`` are None."""
        times: StageTimes = {}
        out = self._run(batch, thresholds, times)
        if self.device.type != "cuda":
            times["h2d"] = times["d2h"] = None
        return out, times

    def _run(
        self, batch: Batch, thresholds: np.ndarray | None, times: StageTimes | None
    ) -> np.ndarray:
        try:
            with torch.inference_mode():
                streams = self._streams()
                if streams is None:
                    return self._forward(batch, thresholds, None, times)
                compute, copy = streams
                with torch.cuda.stream(compute):
                    out = self._forward(batch, thresholds, copy, times)
                compute.synchronize()
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


class _StageClock:
    """Wall time per stage into ``times`` (synchronising the device first); inert without."""

    def __init__(self, device: torch.device, times: StageTimes | None) -> None:
        self.device, self.times = device, times
        self._last = time.perf_counter() if times is not None else 0.0

    def lap(self, stage: str) -> None:
        if self.times is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times[stage] = now - self._last
        self._last = now


def use_compile_cache(settings: EngineSettings) -> None:
    """Point torch.compile's cache at ``ML_COMPILE_CACHE_DIR`` unless the environment names
    another (``TORCHINDUCTOR_CACHE_DIR``). Inductor writes its default (a per-user directory
    under /tmp) into that variable the first time it is asked, which importing torch may do:
    that value is not a choice and is replaced; inductor reads the variable at each use."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(settings.compile_cache_dir.resolve())
