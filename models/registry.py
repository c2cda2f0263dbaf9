"""Registry of (name, variant) → model spec, and ``create_model``.

``full`` variants have the capacity of production GPU models and a 1024×1024 input;
``small`` variants are CPU-friendly (256×256 input, < 1M parameters) for the demo and tests.
Every model takes one grey channel normalised by percentiles and returns one-channel logits at
input resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from models.cbam_resunet import CbamResUNet
from models.errors import UnknownModelSpec
from models.hrnet import HRNetV2, hrnet_config
from models.unet import build_unet

NORMALISATION = "grey; percentiles 1–99.8 mapped to 0–1 (8- and 16-bit alike)"
OUTPUT = "(N, 1, H, W) float32 logits at input resolution; sigmoid gives foreground probability"


@dataclass(frozen=True)
class ModelSpec:
    """What a caller needs to know to feed a model and read its output."""

    name: str
    variant: str
    architecture: str
    input_size: int
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    in_channels: int = 1
    normalisation: str = NORMALISATION
    output: str = OUTPUT

    @property
    def key(self) -> str:
        return f"{self.name}/{self.variant}"

    def describe(self) -> dict[str, object]:
        """JSON-friendly description (no callables)."""
        return {
            "name": self.name,
            "variant": self.variant,
            "architecture": self.architecture,
            "input_size": [self.input_size, self.input_size],
            "in_channels": self.in_channels,
            "normalisation": self.normalisation,
            "output": self.output,
        }


def _specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            "hrnet",
            "full",
            "HRNetV2-W18 (timm hrnet_w18 backbone, 4-branch fusion head 256)",
            1024,
            lambda: HRNetV2("hrnet_w18", 1, 256),
        ),
        ModelSpec(
            "hrnet",
            "small",
            "HRNetV2-W8 (timm HRNet, widths 8/16/32/64, fusion head 32)",
            256,
            lambda: HRNetV2("hrnet_w18_small", 1, 32, **hrnet_config(16, 8, 1, 8)),
        ),
        ModelSpec(
            "cbam_resunet",
            "full",
            "CBAM-ResUNet (smp resnet34 encoder depth 5, gated residual CBAM decoder)",
            1024,
            lambda: CbamResUNet("resnet34", 5, (256, 128, 64, 32, 16), 1),
        ),
        ModelSpec(
            "cbam_resunet",
            "small",
            "CBAM-ResUNet (timm resnet18 encoder depth 3, gated residual CBAM decoder)",
            256,
            lambda: CbamResUNet("tu-resnet18", 3, (64, 32, 16), 1),
        ),
        ModelSpec(
            "unet",
            "full",
            "U-Net (smp resnet34 encoder depth 5, decoder 256-16)",
            1024,
            lambda: build_unet("resnet34", 5, (256, 128, 64, 32, 16), 1),
        ),
        ModelSpec(
            "unet",
            "small",
            "U-Net (timm resnet18 encoder depth 3, decoder 64-16)",
            256,
            lambda: build_unet("tu-resnet18", 3, (64, 32, 16), 1),
        ),
    ]


REGISTRY: dict[tuple[str, str], ModelSpec] = {(s.name, s.variant): s for s in _specs()}
MODEL_NAMES: tuple[str, ...] = tuple(sorted({name for name, _ in REGISTRY}))
VARIANTS: tuple[str, ...] = ("full", "small")


def get_spec(name: str, variant: str = "small") -> ModelSpec:
    """The spec of one registry entry; the error lists what exists."""
    try:
        return REGISTRY[(name, variant)]
    except KeyError:
        valid = ", ".join(f"{n}/{v}" for n, v in sorted(REGISTRY))
        raise UnknownModelSpec(
            f"unknown model {name!r} variant {variant!r}; valid: {valid}"
        ) from None


def create_model(name: str, variant: str = "small") -> nn.Module:
    """Build a registry model with random initial weights (eval mode is the caller's choice)."""
    return get_spec(name, variant).build()
