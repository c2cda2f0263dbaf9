"""The profiler's per-runtime tuning: a runtime with configurations to choose among (torch's
fast path, OpenVINO's precision) has a tuner here, which measures its candidates on the probe
batch, leaves the built runtime configured with the fastest whose masks agree with eager torch
fp32, and returns the record the profile keeps. A runtime without a tuner is profiled as built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from ml_service.profiles import FastPathCandidate, FastPathRecord
from ml_service.runtimes.base import InferenceRuntime
from ml_service.runtimes.openvino import OpenVinoRuntime
from ml_service.runtimes.torch import TorchRuntime
from ml_service.runtimes.torch.fastpath import FastPathConfig, candidates
from ml_service.serving.device import DeviceProbe
from ml_service.tools.fastpath_choice import choose_fastpath
from ml_service.tools.openvino_choice import choose_openvino_precision
from models.registry import ModelSpec


@dataclasses.dataclass(frozen=True)
class FastPathOptions:
    """What the profiler tries (see ``ml_service.tools.profile``)."""

    compile_modes: tuple[str, ...]
    batch_size: int
    repeats: int
    notes: tuple[str, ...] = ()


def fastpath_options(
    probe: DeviceProbe, compile_arg: str, fast_batch: int | None, max_batch: int, repeats: int
) -> FastPathOptions:
    cuda = probe.kind == "cuda"
    notes = []
    if compile_arg in ("on", "auto"):
        modes: tuple[str, ...] = ("off", "default")
        if cuda:
            modes += ("reduce-overhead",)
    else:
        modes = ("off",)
        notes.append("torch.compile not measured (--compile off)")
    if not cuda:
        notes.append(
            "CPU: tf32 and CUDA graphs are CUDA only; fp16 is measured only where oneDNN has "
            "fp16 kernels (fastpath.native_fp16_cpu)"
        )
    batch = fast_batch or min(max_batch, 8 if cuda else 1)
    return FastPathOptions(modes, batch, repeats, tuple(notes))


@dataclasses.dataclass(frozen=True)
class Tuner:
    tune: Callable[[nn.Module, ModelSpec, InferenceRuntime, FastPathOptions], FastPathRecord]
    label: Callable[[FastPathCandidate], str]  # a candidate in short, for the profiler's table


def _tune_torch(
    module: nn.Module, spec: ModelSpec, runtime: InferenceRuntime, fast: FastPathOptions
) -> FastPathRecord:
    if not isinstance(runtime, TorchRuntime):
        raise TypeError(f"the torch tuner got the {runtime.name} runtime")
    configs = candidates(runtime.device, compile_modes=fast.compile_modes)
    config, record = choose_fastpath(
        module,
        spec,
        runtime.device,
        configs,
        batch_size=fast.batch_size,
        repeats=fast.repeats,
        notes=fast.notes,
    )
    runtime.configure(config)
    return record


def _tune_openvino(
    module: nn.Module, spec: ModelSpec, runtime: InferenceRuntime, fast: FastPathOptions
) -> FastPathRecord:
    if not isinstance(runtime, OpenVinoRuntime):
        raise TypeError(f"the openvino tuner got the {runtime.name} runtime")
    _, record = choose_openvino_precision(
        module, spec, runtime, batch_size=fast.batch_size, repeats=fast.repeats
    )
    return record


TUNERS: dict[str, Tuner] = {
    "torch": Tuner(
        _tune_torch, lambda c: FastPathConfig(c.precision, c.channels_last, c.compile).label
    ),
    "openvino": Tuner(_tune_openvino, lambda c: c.precision),
}
