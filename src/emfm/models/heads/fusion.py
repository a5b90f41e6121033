"""A UNETR-style decoder that fuses a small CNN on the pixels with several ViT blocks.

Hatamizadeh et al. 2022, "UNETR: Transformers for 3D Medical Image Segmentation": the transformer's
blocks 3, 6, 9 and 12 feed a convolutional decoder at successively finer scales, and a convolution on the
input itself gives the full-resolution skip. Patch tokens at 1/14 of the input cannot place a membrane
to the pixel, so here a light CNN encoder on the pixels gives skips at full, 1/2, 1/4 and 1/8 resolution
(the boundaries), and the ViT blocks join them (the context): the final block is the bottleneck, as
UNETR's z12, and each earlier block is projected and resized to meet one skip, finer for earlier blocks.

MONAI provides the encoder blocks (``UnetrBasicBlock``), the residual conv blocks of the decoder
(``UnetResBlock``), the 1x1 projections (``Convolution``) and the output block (``UnetOutBlock``). Written
by hand: the up-block (MONAI's ``UnetrUpBlock`` concatenates one skip of its own width at exactly twice
the size, but sides here are multiples of 14, so 70 px gives 35, 18 and 9 and the ViT grid is 1/14: the
upsampled map is resized to the skip's exact size, and two skips are concatenated) and the bilinear
resize of the ViT features (no MONAI block resizes to a size known only at run time).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from emfm.errors import ConfigError
from emfm.models.heads._base import HEADS, Head, resize_to

# BatchNorm like the other heads: plain nn.BatchNorm2d modules a per-domain normalisation can replace.
_NORM = "batch"
_ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})  # what MONAI's UnetResBlock uses


def _monai() -> SimpleNamespace:
    """MONAI's blocks, imported when a fusion head is built.

    ``import monai`` takes seconds (its package imports every network, transformers' BERT included);
    importing :mod:`emfm.models.heads` for any other head should not pay for it.
    """
    try:
        from monai.networks.blocks import Convolution, UnetOutBlock, UnetrBasicBlock, UnetResBlock
        from monai.networks.blocks.dynunet_block import get_conv_layer
    except ImportError as err:
        raise ConfigError("the 'fusion' head needs MONAI (pip install monai)") from err
    return SimpleNamespace(
        Convolution=Convolution, UnetOutBlock=UnetOutBlock, UnetrBasicBlock=UnetrBasicBlock,
        UnetResBlock=UnetResBlock, get_conv_layer=get_conv_layer,
    )


class _UpBlock(nn.Module):
    """MONAI's ``UnetrUpBlock`` for skips of any size and number: x2 transposed conv, resize, concatenate, res block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        blocks = _monai()
        self.transp_conv = blocks.get_conv_layer(
            2, in_channels, out_channels, kernel_size=2, stride=2, conv_only=True, is_transposed=True
        )
        self.conv_block = blocks.UnetResBlock(
            2, out_channels + skip_channels, out_channels, kernel_size=3, stride=1, norm_name=_NORM
        )

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = resize_to(self.transp_conv(x), skips[0].shape[-2:])
        return self.conv_block(torch.cat([x, *skips], dim=1))


def level_groups(num_layers: int, levels: int = 4) -> tuple[tuple[int, ...], ...]:
    """Which grids (indices into the grid list) meet each ViT level, coarsest (the bottleneck) first.

    Counting from the final block, blocks are spread evenly over the levels: four blocks give one each
    (final -> bottleneck, ..., first -> 1/2), fewer leave some levels to the CNN alone, more share levels.
    """
    groups: list[list[int]] = [[] for _ in range(levels)]
    for back in range(num_layers):
        groups[min(back * levels // num_layers, levels - 1)].insert(0, num_layers - 1 - back)
    return tuple(tuple(g) for g in groups)


@HEADS.decorator("fusion")
class FusionHead(Head):
    """UNETR-style decoder over ViT blocks and a CNN on the pixels; logits at the full pixel resolution.

    Levels, coarse to fine: the bottleneck (final block at the patch grid), 1/8, 1/4 and 1/2 (CNN skip plus
    a projected ViT block each), full resolution (CNN skip only). ``default_layers`` are UNETR's blocks
    3, 6, 9, 12 (0-based 2, 5, 8, 11). Any number of blocks works; see :func:`level_groups`.
    """

    needs_pixels = True
    default_layers = (2, 5, 8, 11)
    feature_layer = "out"  # MONAI's UnetOutBlock, a 1x1 conv on the full-resolution decoder map
    widths = (16, 32, 64, 96)  # CNN and decoder widths at full, 1/2, 1/4, 1/8 resolution

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14) -> None:
        super().__init__(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
        blocks = _monai()
        w = self.widths
        self.groups = level_groups(num_layers)
        self.encoder = nn.ModuleList(
            blocks.UnetrBasicBlock(2, cin, cout, kernel_size=3, stride=1 if i == 0 else 2, norm_name=_NORM,
                                   res_block=True)
            for i, (cin, cout) in enumerate(zip((3, *w[:-1]), w))
        )
        # ViT level k (1..3) meets the CNN skip of width w[-k]; the decoder then goes down to w[0].
        self.projections = nn.ModuleDict({
            str(k): blocks.Convolution(2, in_channels * len(self.groups[k]), w[-k], kernel_size=1, norm=_NORM,
                                       act=_ACT)
            for k in range(1, 4) if self.groups[k]
        })
        bottleneck = in_channels * len(self.groups[0])
        self.decoder = nn.ModuleList(
            _UpBlock(cin, cout + (cout if str(k) in self.projections else 0), cout)
            for k, (cin, cout) in enumerate(zip((bottleneck, *w[:0:-1]), w[::-1]), start=1)
        )
        self.out = blocks.UnetOutBlock(2, w[0], num_classes)

    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(grids, pixels)
        assert pixels is not None  # check_inputs raised otherwise
        skips = []
        x = pixels
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = torch.cat([grids[i] for i in self.groups[0]], dim=1)
        for k, up in enumerate(self.decoder, start=1):
            meet = [skips[-k]]
            if str(k) in self.projections:
                vit = torch.cat([grids[i] for i in self.groups[k]], dim=1)
                meet.append(resize_to(self.projections[str(k)](vit), meet[0].shape[-2:]))
            x = up(x, meet)
        return self.out(x)
