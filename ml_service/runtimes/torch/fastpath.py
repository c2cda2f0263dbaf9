"""The torch fast path: precision, memory format and compilation of one model on one device.

A :class:`FastPathConfig` is three choices:

- ``precision``: ``fp32``; ``tf32`` (fp32 tensors, TF32 tensor-core matmuls and convolutions;
  CUDA only, Ampere or newer); ``bf16`` or ``fp16`` autocast (``bf16`` on the CPU and on GPUs
  that support it; ``fp16`` on CUDA, and on the CPU, where the profiler measures it only if
  oneDNN has fp16 kernels for the CPU: see :func:`candidate_precisions`), with the network's
  stem kept in fp32 (``ml_service.runtimes.torch.mixed_precision``: plain autocast moved masks
  of real images by up to 3%). Logits are cast back to fp32 before the sigmoid.
- ``channels_last``: weights and inputs in NHWC memory format (faster convolutions on tensor
  cores and on oneDNN CPUs).
- ``compile``: ``off``; ``default`` (``torch.compile``; on CUDA one graph per batch size,
  ``dynamic=False``; on the CPU with automatic dynamic shapes: a static graph for the first
  batch size, one graph with a dynamic batch dimension for all the others, so warm-up compiles
  twice, not once per size; no freezing: see :func:`compile_module`);
  ``reduce-overhead`` (``torch.compile`` with CUDA graphs, captured at warm-up for every batch
  size the sizer may pick; CUDA only).

The profiler (``python -m ml_service.tools.profile``) measures the candidates valid on the device
and records the fastest whose masks agree with fp32 in ``batch_sizes.json``; the engine runs the
recorded choice; ``ML_PRECISION`` and ``ML_COMPILE`` force one (see :func:`resolve`).

TF32 is a process-wide switch in PyTorch (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``), so :func:`set_tf32` sets it once per process: on when any
model of the process runs ``tf32``, off otherwise (so ``fp32`` is true fp32; PyTorch's default
lets cuDNN convolutions use TF32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ml_service.errors import RuntimeUnavailable
from ml_service.profiles import ModelProfile
from ml_service.runtimes.torch.mixed_precision import apply_stem_policy

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FastPathConfig:
    """How a ``TorchRuntime`` runs its module (see the module docstring)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "off"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")

    @property
    def label(self) -> str:
        """Short name, e.g. ``fp32``, ``bf16+channels_last``, ``fp16+compile:reduce-overhead``."""
        parts = [self.precision]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile != "off":
            parts.append(f"compile:{self.compile}")
        return "+".join(parts)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)

    @property
    def dtype_name(self) -> str:
        """What ``ModelProfile.dtype`` records for this configuration."""
        return {"fp32": "float32", "tf32": "tf32", "bf16": "bfloat16", "fp16": "float16"}[
            self.precision
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FastPathConfig:
        return cls(
            precision=str(data.get("precision", "fp32")),
            channels_last=bool(data.get("channels_last", False)),
            compile=str(data.get("compile", "off")),
        )


FP32 = FastPathConfig()


def supported_precisions(device: torch.device) -> tuple[str, ...]:
    """Precisions that run on ``device``: fp32, bf16 and fp16 autocast on the CPU; on CUDA fp32,
    fp16, and tf32/bf16 where the GPU supports them (compute capability 8.0+ for tf32)."""
    if device.type != "cuda":
        return ("fp32", "bf16", "fp16")
    found = ["fp32"]
    if torch.cuda.get_device_capability(device)[0] >= 8:
        found.append("tf32")
    if torch.cuda.is_bf16_supported():
        found.append("bf16")
    found.append("fp16")
    return tuple(found)


def native_fp16_cpu() -> bool:
    """Whether oneDNN has fp16 kernels for this CPU (AVX512-FP16 or AMX-FP16). Without them
    fp16 autocast on the CPU runs on reference kernels (measured on an AVX512-BF16 EPYC:
    4–10× slower than fp32 with channels_last, up to 450× without)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)
    return bool(check()) if check is not None else False


def candidate_precisions(device: torch.device) -> tuple[str, ...]:
    """The supported precisions worth measuring on ``device``: all of them on CUDA; on the CPU
    fp16 only where oneDNN has fp16 kernels (:func:`native_fp16_cpu`). fp16 still runs on any
    CPU when forced (``ML_PRECISION=fp16``) and is covered by the equivalence tests there."""
    found = supported_precisions(device)
    if device.type != "cuda" and not native_fp16_cpu():
        found = tuple(p for p in found if p != "fp16")
    return found


def supported_compile_modes(device: torch.device) -> tuple[str, ...]:
    """``reduce-overhead`` (CUDA graphs) only on CUDA."""
    return COMPILE_MODES if device.type == "cuda" else ("off", "default")


def unsupported(config: FastPathConfig, device: torch.device) -> str | None:
    """Why ``config`` cannot run on ``device``; None when it can."""
    if config.precision not in supported_precisions(device):
        return (
            f"precision {config.precision} does not run on {device} "
            f"(supported: {', '.join(supported_precisions(device))})"
        )
    if config.compile not in supported_compile_modes(device):
        return f"compile mode {config.compile} (CUDA graphs) needs a CUDA device, not {device}"
    return None


def candidates(
    device: torch.device, *, compile_modes: Iterable[str] = ("off",)
) -> list[FastPathConfig]:
    """Every configuration to measure on ``device`` (:func:`candidate_precisions`), fp32
    without channels_last first (the reference; ties go to the earlier, simpler one)."""
    modes = [m for m in compile_modes if m in supported_compile_modes(device)] or ["off"]
    return [
        FastPathConfig(p, cl, m)
        for m in modes
        for p in candidate_precisions(device)
        for cl in (False, True)
    ]


def prepare_module(
    module: nn.Module, config: FastPathConfig, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply ``config`` to ``module`` (already on ``device``, in eval mode) and return what to
    call for a forward pass.

    Under ``bf16``/``fp16`` the module's stem is kept in fp32
    (``ml_service.runtimes.torch.mixed_precision.apply_stem_policy``; undone for fp32/tf32).
    ``channels_last``
    converts the module's parameters in place (``nn.Module.to`` with a memory format);
    compilation wraps it (:func:`compile_module`; compiled by the engine's warm-up). Autocast
    and the input's memory format are applied per call, by
    :func:`autocast` and :func:`to_input_format`.

    Raises:
        RuntimeUnavailable: ``config`` does not run on ``device``.
    """
    problem = unsupported(config, device)
    if problem is not None:
        raise RuntimeUnavailable(problem)
    apply_stem_policy(module, device, reduced=config.autocast_dtype is not None)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    module.to(memory_format=fmt)
    if config.compile == "off":
        return cast(Callable[[torch.Tensor], torch.Tensor], module)
    return compile_module(module, config, device)


MEASURING_RECOMPILE_LIMIT = 64


def allow_many_compiled_copies() -> None:
    """For processes that compile several copies of a model (the profiler's candidates, the
    bench's engines): dynamo keeps 8 compiled graphs per code object by default, and each copy
    of a module takes its own (one per input shape class), so later copies would silently run
    eagerly. A worker compiles each model once and keeps the default."""
    torch._dynamo.config.recompile_limit = max(
        torch._dynamo.config.recompile_limit, MEASURING_RECOMPILE_LIMIT
    )


def compile_module(
    module: nn.Module, config: FastPathConfig, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` as ``config.compile`` says (see the module docstring); lazy: each new
    input shape compiles on its first call.

    On the CPU inductor's ``freezing`` is not used. Passed as a compile option it freezes
    nothing (dynamo reads the switch while tracing, before the option applies, so the weights
    stay graph inputs) and only stops the compiled graph from being cached, which doubled a
    restarted worker's compile time; switched on process-wide it does fold batch norms and
    prepack oneDNN weights, but in torch 2.14.1 that made hrnet/small slower (5.2–6.1 vs 3.4 ms
    at batch 1) and failed on unet/small's dynamic-batch graph (a stride assertion in a fused
    convolution). Measured 2026-11-24, docs/benchmarks.md "Fast path"."""
    if device.type == "cuda":
        compiled = torch.compile(module, mode=config.compile, dynamic=False)
    else:
        compiled = torch.compile(module, dynamic=None)
    return cast(Callable[[torch.Tensor], torch.Tensor], compiled)


def to_input_format(x: torch.Tensor, config: FastPathConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


@contextlib.contextmanager
def autocast(config: FastPathConfig, device: torch.device) -> Iterator[None]:
    """Autocast to the config's reduced precision on ``device``; nothing for fp32/tf32."""
    dtype = config.autocast_dtype
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def mark_step(config: FastPathConfig) -> None:
    """CUDA graphs (``reduce-overhead``): a new inference step begins, so outputs of the
    previous replay may be overwritten (each run copies its output out before returning)."""
    if config.compile == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


def set_tf32(enabled: bool) -> None:
    """Process-wide TF32 switch for CUDA matmuls and cuDNN convolutions (see the module
    docstring); no-op without CUDA."""
    if not torch.cuda.is_available():
        return
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def recorded(profile: ModelProfile | None) -> FastPathConfig | None:
    """The configuration a torch profile records as chosen (None for profiles without one)."""
    if profile is None or profile.fastpath is None:
        return None
    return FastPathConfig.from_json(profile.fastpath.chosen)


def resolve(
    precision: str, compile_setting: str, profile: ModelProfile | None, device: torch.device
) -> tuple[FastPathConfig, str]:
    """The configuration a torch model runs with, and why.

    ``ML_PRECISION=auto`` and ``ML_COMPILE=auto`` take the profile's recorded choice (fp32, no
    compilation, contiguous when there is none); a forced precision keeps the recorded memory
    format; ``ML_COMPILE=on`` compiles (``reduce-overhead``, i.e. CUDA graphs, on CUDA;
    ``default`` on the CPU) and ``off`` does not.

    Raises:
        RuntimeUnavailable: the forced configuration does not run on ``device`` (the message
            names the variable).
    """
    base = recorded(profile)
    reasons = [f"recorded in batch_sizes.json: {base.label}" if base else "no recorded choice"]
    config = base or FP32
    if base is not None and unsupported(base, device):
        config, reasons = FP32, [f"recorded {base.label} does not run on {device}"]
    if precision != "auto":
        config = FastPathConfig(precision, config.channels_last, config.compile)
        reasons.append(f"ML_PRECISION={precision}")
    if compile_setting == "on":
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        mode = config.compile if config.compile != "off" else mode
        config = FastPathConfig(config.precision, config.channels_last, mode)
        reasons.append("ML_COMPILE=on")
    elif compile_setting == "off":
        config = FastPathConfig(config.precision, config.channels_last, "off")
        reasons.append("ML_COMPILE=off")
    problem = unsupported(config, device)
    if problem is not None:
        forced = [r for r in reasons if r.startswith("ML_")]
        raise RuntimeUnavailable(f"{', '.join(forced) or 'recorded choice'}: {problem}")
    return config, "; ".join(reasons)
