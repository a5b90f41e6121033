"""Heads that turn a patch-token grid (B, C, h, w) into two-class logits.

Both end in logits at their own resolution; :class:`~emfm.models.segmenter.Segmenter` resizes them
bilinearly to whatever size the loss or the metric needs.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emfm._registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


@HEADS.decorator("linear")
class LinearHead(nn.Module):
    """DINOv2's linear segmentation head: BatchNorm and a 1x1 conv on the patch grid.

    Costs almost nothing, so it is the CPU-friendly reference (protocol.md, "Heads").
    """

    def __init__(self, in_channels: int, num_classes: int = 2) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, grid):
        return self.classifier(self.norm(grid))


def _conv_bn_gelu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.GELU()]


@HEADS.decorator("deconv")
class DeconvHead(nn.Module):
    """The study's head: 1x1 conv to 512 + BN + GELU, then four x2 up-blocks, then a 1x1 classifier.

    Each up-block is ConvTranspose2d(kernel 4, stride 2, padding 1) + BN + GELU, then a 3x3 conv +
    BN + GELU; channels go 512, 256, 128, 64, 64 (protocol.md, "Heads"). Output is 16x the grid.
    """

    widths = (512, 256, 128, 64, 64)

    def __init__(self, in_channels: int, num_classes: int = 2) -> None:
        super().__init__()
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

    def forward(self, grid):
        return self.classifier(self.body(grid))


def head_names() -> list[str]:
    return HEADS.names()


def create_head(name: str, in_channels: int, num_classes: int = 2) -> nn.Module:
    """Build a registered head; an unknown name lists the valid ones."""
    return HEADS.get(name)(in_channels, num_classes)
