"""HRNetV2: timm's HRNet backbone with the HRNetV2 representation head for segmentation.

timm provides the multi-resolution backbone (parallel branches at strides 4, 8, 16, 32 with
repeated cross-branch fusion). HRNetV2 (Sun et al., 2019) segments by upsampling every branch to
the highest resolution, concatenating them, and mixing with a small conv head; timm has no such
head, so it is the only part written here.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn


def _stage(branches: int, block: str, blocks: int, channels: tuple[int, ...]) -> dict[str, Any]:
    return {
        "num_modules": 1,
        "num_branches": branches,
        "block_type": block,
        "num_blocks": (blocks,) * branches,
        "num_channels": channels,
        "fuse_method": "SUM",
    }


def hrnet_config(stem_width: int, width: int, blocks: int, stage1_channels: int) -> dict[str, Any]:
    """A timm HRNet config with branch widths ``width × (1, 2, 4, 8)``."""
    w = width
    return {
        "stem_width": stem_width,
        "stage1": _stage(1, "BOTTLENECK", 1, (stage1_channels,)),
        "stage2": _stage(2, "BASIC", blocks, (w, 2 * w)),
        "stage3": _stage(3, "BASIC", blocks, (w, 2 * w, 4 * w)),
        "stage4": _stage(4, "BASIC", blocks, (w, 2 * w, 4 * w, 8 * w)),
    }


class HRNetV2(nn.Module):
    """HRNet backbone + HRNetV2 head → one-channel logits at input resolution.

    Input ``(N, C, H, W)`` float32 with H, W multiples of 32; output ``(N, 1, H, W)`` logits.
    """

    def __init__(self, timm_name: str, in_channels: int, head_channels: int, **cfg: Any) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            timm_name,
            pretrained=False,
            features_only=True,
            feature_location="",
            out_indices=(1, 2, 3, 4),
            in_chans=in_channels,
            **cfg,
        )
        feature_info: Any = self.backbone.feature_info
        fused = sum(feature_info.channels())
        self.head = nn.Sequential(
            nn.Conv2d(fused, head_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, 1, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
        ]
        logits = self.head(torch.cat(up, dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
