"""CBAM-ResUNet: residual U-Net with CBAM attention and attention gates on the skips.

The residual encoder is segmentation-models-pytorch's ResNet encoder and the attention module is
timm's CBAM (channel + spatial). What neither library has is written here: the attention gate
(Oktay et al., 2018) that weighs each skip by the decoder's coarser context, and the residual
decoder block that combines them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from timm.layers.cbam import CbamModule
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)
    )


class AttentionGate(nn.Module):
    """Additive attention gate: ``skip * sigmoid(psi(relu(Wg·g + Wx·skip)))``.

    ``g`` is the decoder feature already upsampled to the skip's resolution.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_g = _conv_bn(gate_channels, inter_channels, k=1)
        self.w_x = _conv_bn(skip_channels, inter_channels, k=1)
        self.psi = nn.Sequential(_conv_bn(inter_channels, 1, k=1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(F.relu(self.w_g(g) + self.w_x(skip)))
        return skip * alpha


class ResidualDecoderBlock(nn.Module):
    """Upsample, gate the skip, concatenate, two 3×3 convs with a residual shortcut, CBAM."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = (
            AttentionGate(in_channels, skip_channels, max(skip_channels // 2, 8))
            if skip_channels
            else None
        )
        cin = in_channels + skip_channels
        self.body = nn.Sequential(
            _conv_bn(cin, out_channels), nn.ReLU(inplace=True), _conv_bn(out_channels, out_channels)
        )
        self.shortcut = _conv_bn(cin, out_channels, k=1)
        self.cbam = CbamModule(out_channels, rd_ratio=1 / 4, rd_divisor=4)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else [2 * s for s in x.shape[-2:]]
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None and self.gate is not None:
            x = torch.cat([x, self.gate(x, skip)], dim=1)
        return self.cbam(F.relu(self.body(x) + self.shortcut(x)))


class CbamResUNet(nn.Module):
    """ResNet encoder (smp) + gated residual CBAM decoder → ``(N, 1, H, W)`` logits.

    Input ``(N, C, H, W)`` float32 with H, W multiples of ``2**depth``.
    """

    def __init__(
        self, encoder: str, depth: int, decoder_channels: tuple[int, ...], in_channels: int
    ) -> None:
        super().__init__()
        if len(decoder_channels) != depth:
            raise ValueError(f"decoder_channels needs {depth} entries, got {decoder_channels}")
        self.encoder = get_encoder(encoder, in_channels=in_channels, depth=depth, weights=None)
        enc = list(self.encoder.out_channels)  # [in, stride2, stride4, ...]
        skips = enc[1:-1][::-1] + [0]  # deepest skip first; the last block has no skip
        cins = [enc[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            ResidualDecoderBlock(cin, skip, cout)
            for cin, skip, cout in zip(cins, skips, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)[1:]
        skips: list[torch.Tensor | None] = [*feats[:-1][::-1], None]
        y = feats[-1]
        for block, skip in zip(self.blocks, skips, strict=True):
            y = block(y, skip)
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y
