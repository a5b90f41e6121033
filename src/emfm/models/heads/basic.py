"""Heads with no decoder: a BatchNorm and a 1x1 conv on one or several blocks, and the study's deconv head.

``linear`` and ``deconv`` read the final block only and keep the parameter names of the first release, so
checkpoints written before the head interface took a list of grids still load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emfm.models.heads._base import HEADS, Head, resize_to


@HEADS.decorator("linear")
class LinearHead(Head):
    """DINOv2's linear segmentation head: BatchNorm and a 1x1 conv on the final patch grid.

    Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision", the "lin." setting
    of its semantic-segmentation evaluation.
    Costs almost nothing, so it is the CPU-friendly reference (protocol.md, "Heads").
    """

    default_layers = (-1,)
    fixed_num_layers = 1

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        self.norm = nn.BatchNorm2d(in_channels)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(grids, pixels)
        return self.classifier(self.norm(grids[-1]))


def _conv_bn_gelu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.GELU()]


@HEADS.decorator("deconv")
class DeconvHead(Head):
    """The study's head: 1x1 conv to 512 + BN + GELU, then four x2 up-blocks, then a 1x1 classifier.

    Each up-block is ConvTranspose2d(kernel 4, stride 2, padding 1) + BN + GELU, then a 3x3 conv +
    BN + GELU; channels go 512, 256, 128, 64, 64 (protocol.md, "Heads"). Output is 16x the final grid.
    """

    default_layers = (-1,)
    fixed_num_layers = 1
    widths = (512, 256, 128, 64, 64)

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        layers: list[nn.Module] = _conv_bn_gelu(in_channels, self.widths[0], 1)
        for cin, cout in zip(self.widths[:-1], self.widths[1:]):
            layers += [
                nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.GELU(),
                *_conv_bn_gelu(cout, cout, 3),
            ]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(self.widths[-1], num_classes, kernel_size=1)

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(grids, pixels)
        return self.classifier(self.body(grids[-1]))


@HEADS.decorator("multilinear")
class MultiLinearHead(Head):
    """DINOv2's multi-block linear head: BatchNorm over several blocks' grids concatenated, then a 1x1 conv.

    Oquab et al. 2023, "DINOv2", the "+ms" setting of its semantic-segmentation evaluation, whose linear
    layer reads the last four blocks (mmseg ``BNHead`` with ``resize_concat`` in the DINOv2 repository;
    "+ms" also adds test-time multi-scale, which is the evaluator's business, not the head's). DINOv2 also
    concatenates each block's class token; :class:`~emfm.backbones.BackboneOutput` layers carry patch
    tokens only, so this head reads those. The default blocks are not DINOv2's last four: on this task a linear probe of
    ViT-S finds most of the signal in blocks 5-8; the default reads blocks 2, 5, 8 and 11, which cover that band
    and are the blocks DPT and the fusion head read, so one cached encoding serves all three heads.
    Grids of different sizes are resized to the final block's, as ``resize_concat`` does.
    """

    default_layers = (2, 5, 8, 11)

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        channels = in_channels * num_layers
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(grids, pixels)
        size = grids[-1].shape[-2:]
        return self.classifier(self.norm(torch.cat([resize_to(g, size) for g in grids], dim=1)))
