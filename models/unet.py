"""UNet: segmentation-models-pytorch's U-Net with a ResNet encoder, one-channel logits."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn


def build_unet(
    encoder: str, depth: int, decoder_channels: tuple[int, ...], in_channels: int
) -> nn.Module:
    """smp.Unet with random init (never a hub download: ``encoder_weights=None``)."""
    return smp.Unet(
        encoder_name=encoder,
        encoder_depth=depth,
        encoder_weights=None,
        decoder_channels=decoder_channels,
        in_channels=in_channels,
        classes=1,
    )
