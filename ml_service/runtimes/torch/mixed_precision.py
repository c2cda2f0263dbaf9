"""Mixed precision under autocast: a network's stem stays in fp32.

Why: bf16 keeps 8 significant bits, about as many as the grey levels of an 8-bit image after
percentile normalisation (one level is 0.004–0.01 of the normalised range, a bf16 step is
0.004–0.008 there). Under plain autocast the first convolution gets its input rounded to bf16,
and the convolutions at the two highest resolutions add their own rounding to the features every
later layer and skip connection starts from. On scikit-image's ``cell.png`` (one low-contrast
cell, 3–6% foreground) that moved 3% of the mask: IoU against fp32 0.970 (hrnet/small) and
0.972 (unet/small). Kept in fp32, the segmentation head changed nothing (0.970), the first
convolution alone gave 0.987 / 0.995, the whole stem 0.994 / 0.994 (see docs/benchmarks.md,
"Fast path").

Policy (:func:`apply_stem_policy`): every convolution executed before the network first produces
a feature map coarser than 1/:data:`STEM_STRIDE` of its input runs in fp32, with autocast off
and its inputs cast to fp32; everything after it runs in the reduced precision. The stem is
found by tracing one fp32 forward pass (:func:`stem_convolutions`), so the rule needs no list
per architecture: hrnet's two stem convolutions, its first bottleneck and first transition;
the ResNet encoders' 7×7 convolution and ``layer1``.

A layer is kept in fp32 by an instance attribute ``forward`` (:class:`Fp32Forward`) that
shadows its class's: parameter names, ``state_dict`` and ONNX exports are unchanged,
``copy.deepcopy`` copies it along with its layer, and :func:`release_fp32` removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ml_service.errors import RuntimeUnavailable

log = logging.getLogger(__name__)

STEM_STRIDE = 4
"""Convolutions executed before the first feature map at a stride above this are the stem."""

TRACE_SIZE = 128
"""Side of the zero input traced to find the stem (a multiple of 32, as the models need)."""


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, list | tuple):
        return type(value)(_to_fp32(v) for v in value)
    return value


class Fp32Forward:
    """The ``forward`` of a layer kept in fp32: autocast off, floating inputs cast to fp32, the
    layer's own class ``forward`` run on them (its output is fp32)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        device = next(
            (a.device.type for a in args if isinstance(a, torch.Tensor)),
            "cpu",
        )
        with torch.autocast(device_type=device, enabled=False):
            return type(self.layer).forward(self.layer, *_to_fp32(args), **_to_fp32(kwargs))


def keep_in_fp32(module: nn.Module, names: Iterable[str]) -> None:
    """Run the submodules ``names`` (as in ``module.named_modules()``) in fp32 under autocast.

    Raises:
        KeyError: a name that is not a submodule of ``module``.
    """
    layers = dict(module.named_modules())
    for name in names:
        layer = layers[name]
        layer.forward = Fp32Forward(layer)  # type: ignore[method-assign]


def fp32_layers(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` kept in fp32, in module order."""
    return [
        name
        for name, layer in module.named_modules()
        if isinstance(layer.__dict__.get("forward"), Fp32Forward)
    ]


def release_fp32(module: nn.Module) -> None:
    """Undo :func:`keep_in_fp32` on every submodule of ``module``."""
    for layer in module.modules():
        if isinstance(layer.__dict__.get("forward"), Fp32Forward):
            del layer.__dict__["forward"]


def stem_convolutions(module: nn.Module, device: torch.device, size: int = TRACE_SIZE) -> list[str]:
    """Names of the convolutions of ``module`` that run before its first feature map at a
    stride above :data:`STEM_STRIDE`, in execution order.

    Runs ``module`` once in fp32 on a ``(1, C, size, size)`` zero input on ``device`` (``C``:
    the first convolution's input channels); ``[]`` for a module without convolutions.

    Raises:
        RuntimeUnavailable: the module does not run on that input.
    """
    names = {layer: name for name, layer in module.named_modules()}
    convs = [layer for layer in names if isinstance(layer, nn.Conv2d)]
    if not convs:
        return []
    executed: list[tuple[str, int]] = []

    def record(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        executed.append((names[layer], size // max(1, int(output.shape[-1]))))

    handles = [conv.register_forward_hook(record) for conv in convs]
    x = torch.zeros(1, convs[0].in_channels, size, size, device=device)
    try:
        with torch.inference_mode():
            module(x)
    except RuntimeError as exc:
        raise RuntimeUnavailable(f"cannot trace the stem on a {size}px input: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
    stem: list[str] = []
    for name, stride in executed:
        if stride > STEM_STRIDE:
            break
        if name not in stem:
            stem.append(name)
    return stem


def apply_stem_policy(module: nn.Module, device: torch.device, reduced: bool) -> list[str]:
    """Keep ``module``'s stem in fp32 when it runs in a ``reduced`` precision (autocast), and
    nothing otherwise; returns the names kept in fp32. Idempotent."""
    release_fp32(module)
    if not reduced:
        return []
    stem = stem_convolutions(module, device)
    keep_in_fp32(module, stem)
    log.debug("fp32 stem: %s", ", ".join(stem) or "none")
    return stem
