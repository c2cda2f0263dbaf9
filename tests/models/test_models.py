"""Generic model tests in the style of smp's: every registry entry builds, gives one-channel
logits at input resolution, has the expected size, and is deterministic in eval mode."""

from __future__ import annotations

import pytest
import torch

from models.errors import UnknownModelSpec
from models.registry import MODEL_NAMES, REGISTRY, create_model, get_spec

# parameter counts (a change here is a change of architecture, and of weight files)
EXPECTED_PARAMS = {
    ("hrnet", "small"): 267_329,
    ("cbam_resunet", "small"): 908_513,
    ("unet", "small"): 877_841,
    ("hrnet", "full"): 10_183_957,
    ("cbam_resunet", "full"): 24_872_301,
    ("unet", "full"): 24_430_097,
}


@pytest.mark.parametrize(
    "key",
    [pytest.param(k, marks=[pytest.mark.slow] if k[1] == "full" else []) for k in sorted(REGISTRY)],
    ids=lambda k: f"{k[0]}-{k[1]}",
)
class TestModel:
    def test_parameter_count(self, key: tuple[str, str]) -> None:
        model = create_model(*key)
        assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[key]

    def test_output_is_one_channel_logits_at_input_resolution(self, key: tuple[str, str]) -> None:
        spec = get_spec(*key)
        model = spec.build().eval()
        side = 64 if spec.variant == "full" else spec.input_size  # full models: small probe
        x = torch.randn(2, spec.in_channels, side, side)
        with torch.inference_mode():
            y = model(x)
        assert y.shape == (2, 1, side, side)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()

    def test_eval_output_is_deterministic_and_batch_independent(self, key: tuple[str, str]) -> None:
        torch.manual_seed(0)
        spec = get_spec(*key)
        model = spec.build().eval()
        x = torch.randn(3, spec.in_channels, 64, 64)
        with torch.inference_mode():
            a, b = model(x), model(x)
            single = model(x[1:2])
        assert torch.equal(a, b)
        assert torch.allclose(a[1:2], single, atol=1e-4)


def test_registry_covers_three_models_in_two_variants() -> None:
    assert MODEL_NAMES == ("cbam_resunet", "hrnet", "unet")
    assert {v for _, v in REGISTRY} == {"full", "small"}
    assert all(get_spec(n, "full").input_size == 1024 for n in MODEL_NAMES)


def test_spec_describes_inputs_and_outputs() -> None:
    d = get_spec("hrnet", "small").describe()
    assert d["input_size"] == [256, 256] and d["in_channels"] == 1
    assert "logits" in str(d["output"]) and "percentile" in str(d["normalisation"])


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelSpec, match="valid: cbam_resunet/full"):
        get_spec("segformer", "small")
