"""OpenVINO in bf16 with the network's stem kept in fp32, as ``ml_service.mixed_precision``
does for torch.

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
hrnet. The profiler gates each model on its own measurement (``ml_service.openvino_choice``).
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ml_service.mixed_precision import STEM_STRIDE

PRECISE = {"name": "precise", "version": "0"}
"""The IR form of OpenVINO's ``DisableFP16Compression`` runtime attribute."""


def _is_coarse_activation(op: Any, size: int) -> bool:
    if op.get_type_name() == "Constant":
        return False
    for output in op.outputs():
        shape = output.get_partial_shape()
        if (
            shape.rank.is_static
            and shape.rank.get_length() == 4
            and shape[0].is_dynamic  # the batch axis: an activation, not a weight
            and shape[2].is_static
            and shape[2].get_length() < size // STEM_STRIDE
        ):
            return True
    return False


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
    import numpy as np
    import openvino as ov

    names = stem_layer_names(model, size)
    with tempfile.TemporaryDirectory(prefix="cellseg-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, xml_path, compress_to_fp16=False)
        ir_xml, marked = mark_precise(xml_path.read_bytes(), names)
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
    return core.read_model(ir_xml, ov.Tensor(weights)), marked
