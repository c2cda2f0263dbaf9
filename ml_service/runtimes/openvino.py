"""The OpenVINO runtime: Intel's OpenVINO runtime (CPU plugin) on the ONNX export.

Why a third runtime: on this project's 2-core CPU (AMD EPYC with AVX512-BF16) OpenVINO's CPU
plugin in bf16 ran cbam_resunet/small and unet/small 1.3–1.5× faster than compiled PyTorch at
batch 1 with masks within the gate, and hrnet/small in fp32 faster at batch 1 (not at batch 8);
docs/benchmarks.md, "OpenVINO backend". With bf16 only at 1/4 (``bf16@4``) hrnet/small is
faster than compiled PyTorch at every batch size too ("OpenVINO: bf16 by resolution"), so on
this CPU every model runs here. It reads the same ONNX export as
ONNX Runtime (``ml_service.runtimes.onnx_export``: cached, checksummed, rebuilt when stale).

- ``precision``: ``fp32``; ``bf16`` with the stem kept in fp32; or ``bf16@4`` (``bf16@4,8``):
  bf16 only for the layers at 1/4 (and 1/8) of the input's resolution, the rest in fp32
  (``ml_service.runtimes.openvino_precision``). bf16 on a CPU without bf16 instructions is refused
  (OpenVINO would quietly run fp32). The profiler measures these and records the fastest whose
  masks agree with torch fp32 (``ml_service.tools.openvino_choice``); the model is compiled in
  that recorded precision (:func:`resolve_precision`), or the one ``ML_OPENVINO_PRECISION``
  forces.
- Threads: ``threads`` in all (the thread plan's ONNX figure: cores ÷ batches in flight) per
  stream, and one stream per batch that may run at once, so concurrent calls run side by side
  rather than queue. One compiled model per model per process; each calling thread gets its own
  infer request (``CompiledModel`` is thread-safe, an ``InferRequest`` is not).
- CPU only: OpenVINO's GPU plugin drives Intel GPUs, not the CUDA devices the service uses.

``openvino`` is imported lazily, so the engine runs where it is not installed.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import ModelProfile
from ml_service.runtimes.base import (
    BuildRequest,
    DeviceOutOfMemory,
    RuntimeBase,
    logits_to_output,
    module_bytes,
)
from ml_service.runtimes.onnx_export import exported
from ml_service.settings import EngineSettings

_HINT = {"fp32": "f32", "bf16": "bf16"}


def openvino_unavailable(device: torch.device) -> str | None:
    """Why OpenVINO cannot run models on ``device`` in this process; None when it can."""
    if device.type != "cpu":
        return f"OpenVINO runs on the CPU here, not on {device}"
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'cellseg-serve[engine]')"
    return None


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels for this CPU."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(
    setting: str, profile: ModelProfile | None, bf16_here: Callable[[], bool]
) -> tuple[str, str]:
    """An OpenVINO model's precision and why: ``ML_OPENVINO_PRECISION`` when not ``auto`` (a
    forced bf16 on a CPU without bf16 instructions then fails at compilation, naming it), else
    the profile's recorded choice, else fp32. A recorded bf16 on a CPU without bf16 (another
    machine with the same device key) falls back to fp32."""
    if setting != "auto":
        return setting, f"ML_OPENVINO_PRECISION={setting}"
    if profile is None or profile.fastpath is None:
        return "fp32", "no recorded choice"
    precision = str(profile.fastpath.chosen["precision"])
    if precision.startswith("bf16") and not bf16_here():
        return "fp32", f"recorded {precision}, but this CPU has no bf16 instructions"
    return precision, f"recorded in batch_sizes.json: {precision}"


class OpenVinoRuntime(RuntimeBase):
    """One compiled OpenVINO model, shared by every calling thread (see the module docstring)."""

    name = "openvino"
    returns_masks = True

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        return openvino_unavailable(device)

    @classmethod
    def build(cls, request: BuildRequest) -> OpenVinoRuntime:
        """Compiled once, in the precision the engine will run (:func:`resolve_precision`),
        with ``request.threads`` threads per stream and one stream per batch at once."""
        precision, _ = resolve_precision(
            request.settings.openvino_precision, request.profile, native_bf16
        )
        return cls(
            exported(request),
            request.device,
            input_size=request.spec.input_size,
            threads=request.threads,
            streams=request.streams,
            precision=precision,
            resident_bytes=module_bytes(request.module),
        )

    def __init__(
        self,
        model: bytes,
        device: torch.device,
        *,
        input_size: int,
        threads: int,
        streams: int = 1,
        precision: str = "fp32",
        resident_bytes: int,
    ) -> None:
        problem = openvino_unavailable(device)
        if problem is not None:
            raise RuntimeUnavailable(problem)
        self.device = device
        self.resident_bytes = resident_bytes
        self.threads, self.streams = threads, streams
        self.input_size = input_size
        self._onnx = model
        self._local = threading.local()
        self.precision = ""
        self.fp32_layers = 0  # layers a bf16 precision keeps in fp32
        self.configure(precision)

    def configure(self, precision: str) -> None:
        """Compile for ``precision`` (see the module docstring)."""
        from ml_service.runtimes.openvino_precision import (
            keep_in_fp32,
            keep_stem_in_fp32,
            layers_outside,
            parse_precision,
        )

        try:
            kind, strides = parse_precision(precision)
        except ValueError as exc:
            raise RuntimeUnavailable(str(exc)) from None
        if kind == "bf16" and not native_bf16():
            raise RuntimeUnavailable("OpenVINO bf16: this CPU has no bf16 instructions")
        core = _core()
        try:
            model = self.read_model(core)
            fp32_layers = 0
            if kind == "bf16" and strides is None:
                model, fp32_layers = keep_stem_in_fp32(core, model, self.input_size)
            elif kind == "bf16":
                names = layers_outside(model, strides or (), self.input_size)
                model, fp32_layers = keep_in_fp32(core, model, names)
            compiled = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": _HINT[kind],
                    "INFERENCE_NUM_THREADS": self.threads * self.streams,
                    "NUM_STREAMS": self.streams,
                },
            )
        except RuntimeError as exc:  # OpenVINO's errors are plain RuntimeErrors
            raise RuntimeUnavailable(f"OpenVINO cannot load the model: {exc}") from exc
        self._compiled = compiled
        self._local = threading.local()  # requests of the previous compilation are stale
        self.precision, self.fp32_layers = precision, fp32_layers

    def apply_profile(self, profile: ModelProfile | None, settings: EngineSettings) -> str:
        """The precision recorded in ``profile`` or forced (:func:`resolve_precision`);
        recompiled only when it differs from the one built."""
        precision, reason = resolve_precision(settings.openvino_precision, profile, native_bf16)
        if precision != self.precision:
            self.configure(precision)
        return reason

    def describe(self) -> dict[str, Any]:
        return {"precision": self.precision, "fp32_layers": self.fp32_layers}

    @property
    def label(self) -> str:
        return self.precision

    def read_model(self, core: Any) -> Any:
        """The ONNX export as an OpenVINO model with a dynamic batch axis."""
        model = core.read_model(self._onnx)
        model.reshape([-1, model.inputs[0].get_partial_shape()[1], *(self.input_size,) * 2])
        return model

    def activation_strides(self) -> tuple[int, ...]:
        """The resolutions the model's layers compute at, as strides (1, 2, 4, ...): what a
        ``bf16@…`` precision can name."""
        from ml_service.runtimes.openvino_precision import activation_strides

        return activation_strides(self.read_model(_core()), self.input_size)

    def runtime_precisions(self) -> dict[str, tuple[str, str]]:
        """What the plugin compiled: each runtime layer's name → (its type, the precision it
        runs in), e.g. ``("Convolution", "bf16")``."""
        found = {}
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            found[op.get_friendly_name()] = (
                info["layerType"].astype(str),
                info["runtimePrecision"].astype(str),
            )
        return found

    @property
    def dtype_name(self) -> str:
        """What ``ModelProfile.dtype`` records for this runtime."""
        return "bfloat16" if self.precision.startswith("bf16") else "float32"

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def run(self, batch: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``(N, H, W)`` float32, or uint8 masks given ``thresholds`` ``(N,)``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            logits = self._request().infer({0: x})[0]
        except RuntimeError as exc:
            if "allocat" in str(exc).lower():
                raise DeviceOutOfMemory(str(exc)) from exc
            raise
        return logits_to_output(np.array(logits[:, 0], dtype=np.float32), thresholds)

    def release_cached_memory(self) -> None:
        """Nothing to do: OpenVINO frees a request's intermediate memory with the request."""
