"""The contract every head meets, the registry that names them, and the helpers they share.

A head reads one patch grid (B, C, h, w) per backbone block it was built for, in the order of its layer
list (the final block last), and, if its class sets ``needs_pixels``, the normalised input image
(B, 3, h*p, w*p). It returns two-class logits at a resolution of its choosing;
:class:`~emfm.models.segmenter.Segmenter` resizes them bilinearly to whatever size the loss or the
metric needs. Keeping the resolution free lets a cheap head stay at the patch grid and a decoder that
sees the pixels answer at full resolution.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from emfm._registry import Registry
from emfm.errors import ConfigError
from emfm.models.resize import bilinear_resize


class Head(nn.Module, abc.ABC):
    """Base class of the heads: stores the construction facts and checks what forward is given.

    Class attributes:
        needs_pixels: whether :meth:`forward` needs the normalised input image as well as the grids.
        default_layers: the blocks read by default, for a 12-block ViT-S (0-based; negative counts from
            the end); callers map them onto deeper backbones.
        fixed_num_layers: the number of blocks the architecture is built around, or ``None`` when any
            number from one up works.
        default_lr: the learning rate a run uses when it sets none; one that learns in a short CPU run
            (the study's protocol sets its own, 5e-5, in ``configs/study.yaml``).
        feature_layer: the dotted name of the head's last layer, the classifier; its input is what this
            head calls its features (what feature alignment matches across sets and the feature-shift
            report measures; see :func:`feature_module`).

    Attributes:
        in_channels, num_classes, num_layers, patch_size: as given to the constructor.
    """

    needs_pixels: bool = False
    default_layers: tuple[int, ...] = (-1,)
    fixed_num_layers: int | None = None
    default_lr: float = 1e-3
    feature_layer: str = "classifier"

    def __init__(self, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14) -> None:
        super().__init__()
        name = type(self).__name__
        if num_layers < 1:
            raise ConfigError(f"{name} needs at least one backbone block, got num_layers={num_layers}")
        if self.fixed_num_layers is not None and num_layers != self.fixed_num_layers:
            raise ConfigError(
                f"{name} reads exactly {self.fixed_num_layers} backbone block(s), got num_layers={num_layers}; "
                f"give it {self.fixed_num_layers} layers (default {self.default_layers}) or pick another head"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.patch_size = patch_size

    @abc.abstractmethod
    def forward(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_classes, h', w') from the grids (and the pixels, if ``needs_pixels``)."""

    def check_inputs(self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None) -> None:
        """Fail with a message that names the head when it is given the wrong number of grids or no pixels."""
        name = type(self).__name__
        if len(grids) != self.num_layers:
            raise ValueError(f"{name} was built for {self.num_layers} grid(s), got {len(grids)}")
        if self.needs_pixels and pixels is None:
            raise ValueError(f"{name} needs the input pixels as well as the grids")


HEADS: Registry[type[Head]] = Registry("head")

# default_layers are written for ViT-S (and ViT-B): 12 blocks.
_REFERENCE_DEPTH = 12


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a (B, C, h, w) map to ``size``; the map itself when it already has that size.

    Patch sizes (14) are not powers of two, so feature maps met at the decoders' scales differ by a pixel
    or by a non-integer factor; resizing to the exact size of the map they join handles every case.
    """
    return bilinear_resize(x, size)


def feature_module(head: nn.Module) -> nn.Module:
    """The head's last layer (its ``feature_layer``), whose input is the head's feature map (B, C, h', w')."""
    name = getattr(head, "feature_layer", None)
    if not name:
        raise ConfigError(f"{type(head).__name__} names no feature layer; set its feature_layer")
    return head.get_submodule(name)


def head_names() -> list[str]:
    return HEADS.names()


def head_layers(name: str, depth: int) -> tuple[int, ...]:
    """The blocks head ``name`` reads by default on a backbone of ``depth`` blocks.

    Its 12-block defaults are moved to the same relative depth: block j becomes
    ``round((j + 1) * depth / 12) - 1``, so the final block stays final and the blocks stay spread
    evenly. This reproduces Depth Anything's choices for DINOv2 ViT-g (40 blocks: 9, 19, 29, 39) and,
    up to one block, ViT-L (24 blocks: 5, 11, 17, 23 where it uses 4, 11, 17, 23). Negative indices count
    from the end on any backbone and are kept.
    """
    if depth < 1:
        raise ConfigError(f"a backbone has at least one block, got depth={depth}")
    out = []
    for j in HEADS.get(name).default_layers:
        out.append(j if j < 0 else max(0, int((j + 1) * depth / _REFERENCE_DEPTH + 0.5) - 1))
    return tuple(out)


def head_default_lr(name: str) -> float:
    """The learning rate a run with head ``name`` uses when its configuration sets none."""
    return HEADS.get(name).default_lr


def create_head(
    name: str, in_channels: int, num_classes: int = 2, *, num_layers: int = 1, patch_size: int = 14
) -> Head:
    """Build a registered head; an unknown name lists the valid ones."""
    return HEADS.get(name)(in_channels, num_classes, num_layers=num_layers, patch_size=patch_size)
