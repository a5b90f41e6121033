"""The from-scratch baseline's network: a 2D U-Net that reads only the pixels.

Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation", the model
the EM mitochondria literature reports against (Casser et al. 2020 and Franco-Barranco et al. 2021 reach
0.888-0.893 foreground IoU on Lucchi++ with U-Net variants). MONAI's ``BasicUNet`` is that layout as a
well-kept library keeps it: two 3x3 convolutions per level, four 2x max-poolings, transposed-convolution
up-sampling and concatenated skips, instance norm and LeakyReLU. It is taken as it is (its default widths
32, 32, 64, 128, 256, 32 for ``unet``; half of them for ``unet-small``, a CPU-sized variant) rather than
tuned, so the comparison is with the textbook baseline, not with a second model of emfm's own design.

The head registry's contract is kept: it is built with the (empty) backbone's ``in_channels`` and ignores
the grids; the grey slice arrives as the shared preprocessing's three repeated channels, of which it reads
one. Sides must be multiples of 16 (the scratch backbone's ``patch_size`` makes the preprocessing ensure it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emfm.models.heads._base import HEADS, Head


@HEADS.decorator("unet")
class UNetHead(Head):
    """A MONAI ``BasicUNet`` on the first pixel channel; full-resolution two-class logits."""

    needs_pixels = True
    default_layers = (-1,)
    features: tuple[int, ...] = (32, 32, 64, 128, 256, 32)
    feature_layer = "net.final_conv"  # BasicUNet's 1x1 output conv

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 16) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        from monai.networks.nets import BasicUNet

        self.net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, features=self.features)

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        if pixels is None:
            raise ValueError(f"{type(self).__name__} needs the input pixels: it has no backbone features to read")
        return self.net(pixels[:, :1])


@HEADS.decorator("unet-small")
class SmallUNetHead(UNetHead):
    """:class:`UNetHead` at half width (0.5 M parameters): a from-scratch baseline that fits a CPU budget."""

    features = (16, 16, 32, 64, 128, 16)
