"""A DPT decoder: four ViT blocks reassembled at four scales and fused coarse to fine.

Ranftl, Bochkovskiy and Koltun 2021, "Vision Transformers for Dense Prediction" (DPT), as Depth Anything
(Yang et al. 2024) puts it on DINOv2: each block is projected by a 1x1 conv, resized to 4x, 2x, 1x and
0.5x the patch grid (transposed convs, identity, a stride-2 conv), brought to a common width by a 3x3 conv,
then fused from the coarsest up by residual conv units with x2 upsampling, and classified by DPT's
segmentation head. The widths default to Depth Anything's ViT-S setting (features 64, reassemble widths
48, 96, 192, 384), which keeps a forward and backward pass on CPU cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emfm.models.heads._base import HEADS, Head


class _ResidualConvUnit(nn.Module):
    """DPT's residual conv unit with BatchNorm (``bn=True`` in DPT's code): (ReLU, 3x3 conv, BN) twice, plus input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(features)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(features)
        self.act = nn.ReLU()  # not in place: the unit adds its input back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm1(self.conv1(self.act(x)))
        out = self.norm2(self.conv2(self.act(out)))
        return out + x


class _FusionBlock(nn.Module):
    """DPT's feature fusion block: add the lateral map through a residual unit, refine, upsample, 1x1 conv.

    The coarsest block has no lateral input; DPT still builds its residual unit, which then never gets
    a gradient, so here it is left out.
    """

    def __init__(self, features: int, *, lateral: bool) -> None:
        super().__init__()
        self.lateral = _ResidualConvUnit(features) if lateral else None
        self.refine = _ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(
        self, x: torch.Tensor, lateral: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        if self.lateral is not None:
            if lateral is None:
                raise ValueError("this fusion block fuses a lateral map; none was given")
            x = x + self.lateral(lateral)
        x = self.refine(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


@HEADS.decorator("dpt")
class DPTHead(Head):
    """DPT decoder over four blocks; logits at 8x the patch grid (about half the input for patch 14).

    ``default_layers`` are Depth Anything's blocks for ViT-S, evenly spaced through the network. The
    block read first goes to the finest scale, the final block to the coarsest, as in DPT.

    Args:
        num_layers: must be 4 (hence its default, unlike the other heads' 1).
        features: width of the fusion path (DPT's ``features``).
        widths: widths of the four reassembled maps, finest first (DPT's ``out_channels``).
    """

    default_layers = (2, 5, 8, 11)
    fixed_num_layers = 4

    feature_layer = "head.4"  # the 1x1 classifier after the last BN, ReLU and dropout

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 2,
        *,
        num_layers: int = 4,
        patch_size: int = 14,
        features: int = 64,
        widths: Sequence[int] = (48, 96, 192, 384),
    ) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        w = tuple(widths)
        if len(w) != 4:
            raise ValueError(f"DPTHead needs four reassemble widths, got {w}")
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in w)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(w[0], w[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(w[1], w[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(w[3], w[3], kernel_size=3, stride=2, padding=1),
        ])
        self.layers_rn = nn.ModuleList(nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False) for c in w)
        self.refine = nn.ModuleList(_FusionBlock(features, lateral=i < 3) for i in range(4))
        # DPT's segmentation head (its final x2 upsampling is left to the segmenter's resize).
        self.head = nn.Sequential(
            nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(features, num_classes, kernel_size=1),
        )

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(grids, pixels)
        maps = [
            rn(resize(project(g)))
            for g, project, resize, rn in zip(grids, self.projects, self.resize_layers, self.layers_rn)
        ]
        path = self.refine[3](maps[3], size=maps[2].shape[-2:])
        path = self.refine[2](path, maps[2], size=maps[1].shape[-2:])
        path = self.refine[1](path, maps[1], size=maps[0].shape[-2:])
        path = self.refine[0](path, maps[0])
        return self.head(path)
