"""The fp32 stem under autocast: which layers form the stem, that they run in fp32 while
the rest runs in bf16, and that keeping and releasing them leaves the module as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ml_service.errors import RuntimeUnavailable
from ml_service.runtimes.torch import TorchRuntime
from ml_service.runtimes.torch.fastpath import FP32, FastPathConfig
from ml_service.runtimes.torch.mixed_precision import (
    Fp32Forward,
    apply_stem_policy,
    fp32_layers,
    keep_in_fp32,
    release_fp32,
    stem_convolutions,
)
from ml_service.serving.pool import build_module
from ml_service.settings import EngineSettings
from models.registry import get_spec
from tests.ml_service.fakes import ScaleModule

CPU = torch.device("cpu")


def _strided() -> nn.Sequential:
    """Convolutions at strides 2, 4, 8, then a 1×1 head at stride 8: the stem is "0" and "2"."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 1, 1),
    ).eval()


def _output_dtypes(module: nn.Module, x: torch.Tensor) -> dict[str, torch.dtype]:
    dtypes: dict[str, torch.dtype] = {}
    handles = [
        layer.register_forward_hook(
            lambda _m, _i, out, name=name: dtypes.__setitem__(name, out.dtype)
        )
        for name, layer in module.named_modules()
        if isinstance(layer, nn.Conv2d)
    ]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)
    for handle in handles:
        handle.remove()
    return dtypes


def test_the_stem_is_every_convolution_before_the_first_stride_8_feature() -> None:
    assert stem_convolutions(_strided(), CPU) == ["0", "2"]
    assert stem_convolutions(ScaleModule(), CPU) == []  # no convolutions


@pytest.mark.parametrize("model", ["unet", "cbam_resunet"])
def test_resnet_stems_are_the_7x7_convolution_and_layer1(
    settings: EngineSettings, model: str
) -> None:
    module, _ = build_module(get_spec(model, "small"), settings)
    stem = stem_convolutions(module, CPU)
    assert stem[0] == "encoder.model.conv1"
    assert stem[1:] == [f"encoder.model.layer1.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]


def test_hrnet_stem_ends_before_its_stride_8_branch(settings: EngineSettings) -> None:
    module, _ = build_module(get_spec("hrnet", "small"), settings)
    stem = stem_convolutions(module, CPU)
    assert stem[:2] == ["backbone.conv1", "backbone.conv2"]
    assert "backbone.layer1.0.conv3" in stem
    assert not any(n.startswith(("backbone.transition1.1", "backbone.stage", "head")) for n in stem)


def test_kept_layers_run_in_fp32_and_the_rest_in_bf16() -> None:
    module = _strided()
    x = torch.rand(2, 1, 64, 64)
    assert set(_output_dtypes(module, x).values()) == {torch.bfloat16}
    keep_in_fp32(module, ["0", "2"])
    assert fp32_layers(module) == ["0", "2"]
    assert _output_dtypes(module, x) == {
        "0": torch.float32,
        "2": torch.float32,
        "3": torch.bfloat16,
        "4": torch.bfloat16,
    }
    with torch.inference_mode():  # without autocast it is the same module
        release_copy = copy.deepcopy(module)
        release_fp32(release_copy)
        torch.testing.assert_close(module(x), release_copy(x), rtol=0, atol=0)


def test_release_restores_the_module_and_names_never_change() -> None:
    module = _strided()
    keys = list(module.state_dict())
    reference = _output_dtypes(module, torch.rand(1, 1, 32, 32))
    keep_in_fp32(module, ["0"])
    assert list(module.state_dict()) == keys
    release_fp32(module)
    assert fp32_layers(module) == [] and "forward" not in module[0].__dict__
    assert _output_dtypes(module, torch.rand(1, 1, 32, 32)) == reference


def test_a_deep_copy_keeps_its_own_fp32_layers() -> None:
    module = _strided()
    keep_in_fp32(module, ["0"])
    clone = copy.deepcopy(module)
    forward = clone[0].__dict__["forward"]
    assert isinstance(forward, Fp32Forward) and forward.layer is clone[0]
    release_fp32(module)
    assert fp32_layers(clone) == ["0"]


def test_the_fast_path_keeps_the_stem_only_under_autocast() -> None:
    backend = TorchRuntime(_strided(), CPU, FastPathConfig("bf16", channels_last=True))
    assert fp32_layers(backend.module) == ["0", "2"]
    backend.configure(FP32)
    assert fp32_layers(backend.module) == []
    assert apply_stem_policy(backend.module, CPU, reduced=True) == ["0", "2"]
    assert apply_stem_policy(backend.module, CPU, reduced=True) == ["0", "2"]  # idempotent


def test_a_module_that_cannot_be_traced_is_reported() -> None:
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(10, 1))
    with pytest.raises(RuntimeUnavailable, match="stem"):
        stem_convolutions(module, CPU)
