"""The runtimes by name: what ``ML_BACKEND`` names and a profile key ends with
(``unet/small:openvino``). Adding a runtime is one module and one line here."""

from __future__ import annotations

from ml_service.errors import RuntimeUnavailable
from ml_service.runtimes.base import Runtime
from ml_service.runtimes.onnxruntime import OnnxRuntime
from ml_service.runtimes.openvino import OpenVinoRuntime
from ml_service.runtimes.torch import TorchRuntime

RUNTIMES: dict[str, Runtime] = {
    "torch": TorchRuntime,
    "onnxruntime": OnnxRuntime,
    "openvino": OpenVinoRuntime,
}
"""In order of preference: ``ML_BACKEND=auto`` gives a tie to the earlier one."""


def runtime_names() -> list[str]:
    return list(RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name``; the error lists the valid names."""
    try:
        return RUNTIMES[name]
    except KeyError:
        valid = ", ".join(RUNTIMES)
        raise RuntimeUnavailable(f"unknown runtime {name!r}; valid: {valid}") from None
