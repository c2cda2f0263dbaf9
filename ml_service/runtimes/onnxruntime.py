"""The ONNX Runtime runtime: the model's ONNX export (``ml_service.runtimes.onnx_export``:
cached, checksummed, rebuilt when stale) in one ONNX Runtime session per model per process, on
the CPU execution provider, or the CUDA provider where a GPU build is installed.

``onnxruntime`` is imported lazily, so the engine runs (torch only) where it is not installed.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.runtimes.base import (
    BuildRequest,
    DeviceOutOfMemory,
    RuntimeBase,
    logits_to_output,
    module_bytes,
)
from ml_service.runtimes.onnx_export import exported


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


class OnnxRuntime(RuntimeBase):
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

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        return onnxruntime_unavailable(device)

    @classmethod
    def build(cls, request: BuildRequest) -> OnnxRuntime:
        """A session on the model's export, with ``request.threads`` intra-op threads."""
        return cls(
            exported(request),
            request.device,
            threads=request.threads,
            resident_bytes=module_bytes(request.module),
        )

    def __init__(
        self, model: bytes, device: torch.device, *, threads: int, resident_bytes: int
    ) -> None:
        problem = onnxruntime_unavailable(device)
        if problem is not None:
            raise RuntimeUnavailable(problem)
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
            raise RuntimeUnavailable(f"ONNX Runtime cannot load the model: {exc}") from exc
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if self.session.get_providers()[0] != wanted:  # ORT falls back silently
            raise RuntimeUnavailable(
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
