"""OpenVINO in bf16 with part of the network kept in fp32: the stem, as
``ml_service.runtimes.torch.mixed_precision`` does for torch, or everything outside chosen
resolutions.

Precisions (:func:`parse_precision`): ``fp32``; ``bf16``, the stem in fp32 and every other
layer in bf16; ``bf16@4`` or ``bf16@4,8``, only the layers whose output feature map is 1/4
(or 1/8) of the input's size in bf16 and every other layer in fp32 (:func:`activation_stride`).
The profiler searches these per model (``ml_service.tools.openvino_choice``).

OpenVINO's CPU plugin runs a whole model in the precision its ``INFERENCE_PRECISION_HINT`` names;
a layer stays in fp32 only when its runtime info carries the ``precise`` attribute (C++:
``ov::disable_fp16_compression``). The Python API cannot set that attribute (a plain rt_info
entry under the same key is ignored: checked with OpenVINO 2026.4.1), but the IR reader
honours it, so :func:`keep_stem_in_fp32` writes the model as IR, adds the attribute to the stem's
layers in the XML (:func:`mark_precise`, a pure function) and reads it back.

The stem (:func:`stem_layer_names`) follows the same rule as torch's: every operation executed
before the network first produces a feature map coarser than 1/``STEM_STRIDE`` of its input.
On OpenVINO's ordered graph: the operations (not constants) before the first one with a 4-D
activation output (dynamic batch) whose height is below ``size / STEM_STRIDE``.

Measured (2026-11-24, this CPU, lowest mask IoU against torch fp32 on the equivalence images):
bf16 for every layer hrnet/small 0.983, unet/small 0.977, cbam_resunet/small 0.996; stem in
fp32 0.987, 0.992, and every layer at 1/4 resolution or finer in fp32 still only 0.989 for
hrnet. By resolution (2026-12-07, this CPU, hrnet/small, ms per image at batch 8): bf16 only at
1/4 passes at 0.9921 and is the fastest plan (1.54 ms, stem rule 1.63, fp32 2.15); bf16 at
1/8, 1/16 and 1/32 together fails at 0.9889 and gains little (2.08 ms). The profiler gates each
model on its own measurement (``ml_service.tools.openvino_choice``). The plugin honours the
attribute
on every layer type these models have but ``Interpolate``, which it runs in bf16 whatever the
attribute (OpenVINO 2026.4.1; seen in the compiled runtime model), so resizes always run in bf16
under a bf16 hint; the masks the gate measures include that.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ml_service.runtimes.torch.mixed_precision import STEM_STRIDE
from ml_service.settings import BF16_AT, parse_precision, precision_at  # noqa: F401 (re-exported)

PRECISE = {"name": "precise", "version": "0"}
"""The IR form of OpenVINO's ``DisableFP16Compression`` runtime attribute."""
_NOT_LAYERS = ("Constant", "Parameter", "Result")


def activation_stride(op: Any, size: int) -> int | None:
    """How much smaller than the ``size``-pixel input ``op``'s 4-D activation output is (1, 2,
    4, ...); None for operations without one (weights, shape arithmetic)."""
    if op.get_type_name() in _NOT_LAYERS:
        return None
    for output in op.outputs():
        shape = output.get_partial_shape()
        if (
            shape.rank.is_static
            and shape.rank.get_length() == 4
            and shape[0].is_dynamic  # the batch axis: an activation, not a weight
            and shape[2].is_static
            and shape[2].get_length() > 0
        ):
            return max(1, size // shape[2].get_length())
    return None


def activation_strides(model: Any, size: int) -> tuple[int, ...]:
    """The resolutions ``model``'s layers compute at, as strides (see :func:`activation_stride`)."""
    found = {activation_stride(op, size) for op in model.get_ordered_ops()}
    return tuple(sorted(s for s in found if s is not None))


def layers_outside(model: Any, strides: Iterable[int], size: int) -> list[str]:
    """Friendly names of ``model``'s layers that do not compute at one of ``strides``: the ones
    a ``bf16@…`` precision keeps in fp32."""
    wanted = set(strides)
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() not in _NOT_LAYERS and activation_stride(op, size) not in wanted
    ]


def _is_coarse_activation(op: Any, size: int) -> bool:
    stride = activation_stride(op, size)
    return stride is not None and stride > STEM_STRIDE


def stem_layer_names(model: Any, size: int) -> list[str]:
    """Friendly names of ``model``'s operations (an ``openvino.Model`` whose input is
    ``(?, C, size, size)``) run before its first feature map coarser than 1/STEM_STRIDE."""
    names: list[str] = []
    for op in model.get_ordered_ops():
        if _is_coarse_activation(op, size):
            return names
        if op.get_type_name() not in ("Constant", "Parameter"):
            names.append(op.get_friendly_name())
    return names  # never coarser than the stride: every layer is stem


def mark_precise(ir_xml: bytes, names: Iterable[str]) -> tuple[bytes, int]:
    """The IR ``ir_xml`` with the ``precise`` attribute on every layer named in ``names``;
    also how many layers were marked."""
    wanted = set(names)
    root = ET.fromstring(ir_xml)
    marked = 0
    for layer in root.iter("layer"):
        if layer.get("name") not in wanted:
            continue
        info = layer.find("rt_info")
        if info is None:
            info = ET.Element("rt_info")
            layer.insert(1 if layer.find("data") is not None else 0, info)
        if not any(a.attrib == PRECISE for a in info.findall("attribute")):
            ET.SubElement(info, "attribute", PRECISE)
        marked += 1
    return ET.tostring(root, encoding="utf-8", xml_declaration=True), marked


def keep_stem_in_fp32(core: Any, model: Any, size: int) -> tuple[Any, int]:
    """``model`` with its stem marked precise (see the module docstring), and how many of its
    layers were marked."""
    return keep_in_fp32(core, model, stem_layer_names(model, size))


def keep_in_fp32(core: Any, model: Any, names: Iterable[str]) -> tuple[Any, int]:
    """``model`` with the layers named in ``names`` marked precise, and how many were marked."""
    import numpy as np
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="cellseg-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, xml_path, compress_to_fp16=False)
        ir_xml, marked = mark_precise(xml_path.read_bytes(), names)
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
    return core.read_model(ir_xml, ov.Tensor(weights)), marked
