"""A backbone and a head, seen as one model from pixels (or cached grids) to logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emfm.models.resize import bilinear_resize
from emfm.transforms import Preprocessing


def resolve_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """Block indices as given (negative from the end) -> 0-based, in the given order; the last
    block is the backbone's final normalised grid."""
    from emfm.errors import ConfigError

    out = []
    for j in layers:
        k = int(j) + depth if int(j) < 0 else int(j)
        if not 0 <= k < depth:
            raise ConfigError(
                f"layer {j} is outside this backbone's {depth} blocks; use 0..{depth - 1} or -1..-{depth}"
            )
        out.append(k)
    return tuple(out)


class Segmenter(nn.Module):
    """Backbone (optional: frozen runs feed cached grids) + head; logits resized to the output size.

    Args:
        head: a registered head (``head(grids, pixels)``, :mod:`emfm.models.heads`).
        backbone: the backbone, for live encoding (LoRA training, evaluation and prediction).
        layers: 0-based blocks the head reads, in its order; the last block is the final grid.
        preprocessing: how slices were sized; a tiled one makes :meth:`encode` tile large inputs.
    """

    def __init__(
        self,
        head: nn.Module,
        backbone: nn.Module | None = None,
        *,
        layers: Sequence[int] = (),
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        self.head = head
        self.backbone = backbone
        self.layers = tuple(int(j) for j in layers)
        self.preprocessing = preprocessing

    @property
    def needs_pixels(self) -> bool:
        return bool(getattr(self.head, "needs_pixels", False))

    def head_logits(
        self, grids: Sequence[torch.Tensor], pixels: torch.Tensor | None, size: Sequence[int]
    ) -> torch.Tensor:
        """Logits at ``size`` from the head's grids (and the pixels, for heads that read them)."""
        return bilinear_resize(self.head(list(grids), pixels if self.needs_pixels else None), size)

    def logits_from_grid(self, grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Single-block heads fed a cached final grid."""
        return self.head_logits([grid], None, size)

    def intermediate_layers(self, depth: int) -> list[int]:
        """The blocks to ask the backbone for besides its final grid."""
        return [j for j in self.layers if j != depth - 1]

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The head's grids for pixels (B, 3, H, W); one large slice is tiled if the run is tiled."""
        if self.backbone is None:
            raise RuntimeError("this Segmenter has no backbone; call head_logits with cached features")
        depth = self.backbone.num_layers
        wanted = self.intermediate_layers(depth)
        tile = self.preprocessing.tile if self.preprocessing is not None and self.preprocessing.tiled else None
        if tile is not None and max(pixels.shape[-2:]) > tile:
            # Slices larger than a tile go through overlapping tiles one at a time, as when cached.
            from emfm.features import encode_slice

            outs = [encode_slice(self.backbone, p, self.preprocessing, wanted) for p in pixels]
            grids = [self._pick(o, depth) for o in outs]
            return [torch.cat([g[k] for g in grids]) for k in range(len(grids[0]))]
        return self._pick(self.backbone.encode(pixels, layers=wanted or None), depth)

    def _pick(self, out, depth: int) -> list[torch.Tensor]:
        if not self.layers:
            return [out.patch_grid]
        return [out.patch_grid if j == depth - 1 else out.layers[j] for j in self.layers]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.encode(pixels), pixels, pixels.shape[-2:])
