"""Inference backends: what the batcher calls to run one batch on a device.

A backend takes a float32 batch ``(N, C, H, W)`` and returns foreground probabilities
``(N, H, W)`` float32, or, given per-item ``thresholds`` ``(N,)`` float32, the uint8 masks
``prob > threshold`` ``(N, H, W)``: thresholding where the logits are (on the GPU) copies back a
quarter of the bytes and spares the CPU the comparison. Both come from the same sigmoid, so a
mask equals thresholding the returned probabilities. Backends that can threshold say so with
``returns_masks = True`` (the batcher only passes thresholds to those). A backend reports device
out-of-memory as ``DeviceOutOfMemory`` so the batcher can split and retry whatever the backend;
tests inject that failure through this interface.

Implementations: ``TorchBackend`` (PyTorch, CUDA or CPU, run as its
``ml_service.runtimes.fastpath.FastPathConfig`` says: precision, channels_last, torch.compile) and
``OnnxRuntimeBackend`` (ONNX Runtime: CPU execution provider, CUDA provider where a GPU build is
installed), and ``ml_service.runtimes.openvino.OpenVinoBackend`` (OpenVINO's CPU plugin). All are
called from several threads at once without a lock; the profile key of a
model includes the backend's ``name`` (``unet/small:onnxruntime``). ``onnxruntime`` is imported
lazily, so the engine runs (torch only) where it is not installed.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ml_service.errors import BackendUnavailable
from ml_service.runtimes import fastpath
from ml_service.runtimes.fastpath import FP32, FastPathConfig

BACKENDS = ("torch", "onnxruntime", "openvino")


class DeviceOutOfMemory(Exception):
    """The device could not hold this batch (CUDA OOM, or host allocation failure)."""


class InferenceBackend(Protocol):
    name: str
    device: torch.device
    resident_bytes: int

    def run(self, batch: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray: ...

    def release_cached_memory(self) -> None: ...


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what stays resident on the device)."""
    return sum(
        t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
    )


def _is_cpu_oom(exc: RuntimeError) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


Batch = np.ndarray | torch.Tensor  # TorchBackend: host arrays or tensors already on the device
StageTimes = dict[str, float | None]  # h2d, compute, d2h seconds (None: not on this device)


class TorchBackend:
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
        """Run from now on as ``config`` says (see ``ml_service.runtimes.fastpath.prepare_module``);
        compilation happens on the first run of each batch size (the engine's warm-up)."""
        self._call = fastpath.prepare_module(self.module, config, self.device)
        self.config = config

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


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid in place; exp over- or underflow at extreme logits gives exactly 0 or 1."""
    out = np.negative(logits, out=logits)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(out, out=out)
        out += 1.0
        return np.reciprocal(out, out=out)


def logits_to_output(logits: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """Host logits ``(N, H, W)`` float32 (overwritten) → probabilities, or uint8 masks
    ``prob > threshold`` given per-item ``thresholds`` ``(N,)``: the backends' common output."""
    prob = _sigmoid(logits)
    if thresholds is None:
        return prob
    limit = np.asarray(thresholds, np.float32)[:, None, None]
    return (prob > limit).astype(np.uint8)


def _is_ort_oom(exc: Exception) -> bool:
    text = str(exc).lower()
    return "failed to allocate memory" in text or "out of memory" in text or "bad_alloc" in text


def onnxruntime_unavailable(device: torch.device) -> str | None:
    """Why ONNX Runtime cannot run models on ``device`` in this process; None when it can."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'cellseg-serve[engine]')"
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return (
                f"this onnxruntime build has no CUDA execution provider for {device} "
                "(install onnxruntime-gpu)"
            )
    return None


class OnnxRuntimeBackend:
    """One ONNX Runtime session per model per process, shared by every calling thread
    (``InferenceSession.run`` is thread-safe).

    CPU: ``threads`` intra-op threads, one inter-op thread; no spin-waiting (the engine's CPU
    threads need those cores for decoding and postprocessing between batches); no memory arena,
    so each batch's memory is returned when it ends, as the memory ledger assumes, and the
    profiler's resident high-water mark measures it. CUDA: the CUDA provider on the device,
    its arena shrunk after every run for the same reason.
    """

    name = "onnxruntime"
    returns_masks = True

    def __init__(
        self, model: bytes, device: torch.device, *, threads: int, resident_bytes: int
    ) -> None:
        problem = onnxruntime_unavailable(device)
        if problem is not None:
            raise BackendUnavailable(problem)
        import onnxruntime as ort

        self.device = device
        self.resident_bytes = resident_bytes
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        providers: list[Any] = ["CPUExecutionProvider"]
        self._run_options = ort.RunOptions()
        if device.type == "cuda":
            index = device.index or 0
            cuda = {"device_id": index, "arena_extend_strategy": "kSameAsRequested"}
            providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
            self._run_options.add_run_config_entry(
                "memory.enable_memory_arena_shrinkage", f"gpu:{index}"
            )
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise BackendUnavailable(f"ONNX Runtime cannot load the model: {exc}") from exc
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if self.session.get_providers()[0] != wanted:  # ORT falls back silently
            raise BackendUnavailable(
                f"ONNX Runtime could not start {wanted} (got {self.session.get_providers()})"
            )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``(N, H, W)`` float32, or uint8 masks given ``thresholds`` ``(N,)``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            (logits,) = self.session.run(None, {self.input_name: x}, self._run_options)
        except Exception as exc:
            if _is_ort_oom(exc):
                raise DeviceOutOfMemory(str(exc)) from exc
            raise
        return logits_to_output(np.ascontiguousarray(logits[:, 0], dtype=np.float32), thresholds)

    def release_cached_memory(self) -> None:
        """Nothing to do: no CPU arena, and the CUDA arena shrinks after every run."""
