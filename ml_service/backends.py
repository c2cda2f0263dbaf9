"""Inference backends: what the batcher calls to run one batch on a device.

A backend takes a float32 batch ``(N, C, H, W)`` and returns foreground probabilities
``(N, H, W)`` float32. It reports device out-of-memory as ``DeviceOutOfMemory`` so the batcher
can split and retry whatever the backend; tests inject that failure through this interface.

Two implementations: ``TorchBackend`` (eager PyTorch, CUDA or CPU) and ``OnnxRuntimeBackend``
(ONNX Runtime: CPU execution provider, CUDA provider where a GPU build is installed). Both are
called from several threads at once without a lock; the profile key of a model includes the
backend's ``name`` (``unet/small:onnxruntime``). ``onnxruntime`` is imported lazily, so the
engine runs (torch only) where it is not installed.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ml_service.errors import BackendUnavailable

BACKENDS = ("torch", "onnxruntime")


class DeviceOutOfMemory(Exception):
    """The device could not hold this batch (CUDA OOM, or host allocation failure)."""


class InferenceBackend(Protocol):
    name: str
    device: torch.device
    resident_bytes: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def release_cached_memory(self) -> None: ...


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what stays resident on the device)."""
    return sum(
        t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
    )


def _is_cpu_oom(exc: RuntimeError) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


class TorchBackend:
    """Eager PyTorch in inference mode. No lock: an eval-mode module is safe to call from
    several threads; on CUDA each calling thread gets its own stream."""

    name = "torch"

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module = module.eval().to(device)
        self.device = device
        self.resident_bytes = module_bytes(self.module)
        self._local = threading.local()

    def _stream(self) -> torch.cuda.Stream | None:
        if self.device.type != "cuda":
            return None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        return stream

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        prob = torch.sigmoid(self.module(x))[:, 0]
        return prob.float().cpu().numpy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            with torch.inference_mode():
                stream = self._stream()
                if stream is None:
                    return self._forward(batch)
                with torch.cuda.stream(stream):
                    out = self._forward(batch)
                stream.synchronize()
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


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid in place; exp over- or underflow at extreme logits gives exactly 0 or 1."""
    out = np.negative(logits, out=logits)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(out, out=out)
        out += 1.0
        return np.reciprocal(out, out=out)


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

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            (logits,) = self.session.run(None, {self.input_name: x}, self._run_options)
        except Exception as exc:
            if _is_ort_oom(exc):
                raise DeviceOutOfMemory(str(exc)) from exc
            raise
        return _sigmoid(np.ascontiguousarray(logits[:, 0], dtype=np.float32))

    def release_cached_memory(self) -> None:
        """Nothing to do: no CPU arena, and the CUDA arena shrinks after every run."""
