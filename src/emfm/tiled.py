"""Features of a whole slice at any pixel scale, computed through overlapping backbone-sized tiles.

The untiled protocol resizes a slice so that its longest edge is one ``resolution`` and encodes it in one
pass, which halves Lucchi++'s resolution at 518 px. Encoding at native scale (``scale=1.0``, about 1022 px)
in one pass gives 4 000+ tokens, and attention is quadratic in the token count; cutting the slice into
tiles the size the backbone was trained at (518 px for DINOv2) bounds the attention cost per tile and keeps
every tile at the position-table size the weights were trained with.

Tiles lie on the patch lattice, so a tile's tokens are exactly the tokens of the slice's own patch grid
(no resampling when stitching), and neighbours overlap so that the tokens next to a tile's inner border,
which see no context beyond it, are never used: each output token is taken from the tile in which it lies
farthest from a tile border (crop-to-centre stitching), i.e. every overlap is split at its middle, on
whole tokens. The stitched grid is then a disjoint union of tile centres, with the same shape as the grid
an untiled pass at the same network size would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emfm.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from emfm.backbones._base import Backbone, BackboneOutput

STITCH = "centre-crop"  # the stitching rule's name, part of :meth:`Tiling.to_dict` so a new rule gets new keys


@dataclass(frozen=True)
class Tile:
    """One tile: where it lies in the slice and which tokens of the stitched grid it supplies.

    Attributes:
        top, left, height, width: the tile's box in network pixels (multiples of ``patch``).
        rows, cols: the half-open ranges of GLOBAL token rows and columns this tile owns.
        patch: the patch size, to convert between pixels and tokens.
    """

    top: int
    left: int
    height: int
    width: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    patch: int

    def pixel_slices(self) -> tuple[slice, slice]:
        """Index into a (..., H, W) pixel tensor that cuts this tile out."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def owned_local(self) -> tuple[slice, slice]:
        """Index into this tile's own (..., height/p, width/p) token grid that keeps its owned tokens."""
        r0, c0 = self.top // self.patch, self.left // self.patch
        return slice(self.rows[0] - r0, self.rows[1] - r0), slice(self.cols[0] - c0, self.cols[1] - c0)

    def owned_global(self) -> tuple[slice, slice]:
        """Index into the stitched (..., H/p, W/p) token grid where this tile's owned tokens go."""
        return slice(*self.rows), slice(*self.cols)


@dataclass(frozen=True)
class TileLayout:
    """How a ``height`` x ``width`` slice (network pixels) is cut into tiles, row-major.

    Attributes:
        height, width: the slice's size in network pixels.
        tile, overlap, patch: the arguments of :func:`plan_tiles` that made it.
        tiles: the tiles, row by row; their owned regions partition the token grid.
    """

    height: int
    width: int
    tile: int
    overlap: int
    patch: int
    tiles: tuple[Tile, ...]

    @property
    def grid(self) -> tuple[int, int]:
        """The stitched token grid's (rows, columns)."""
        return self.height // self.patch, self.width // self.patch

    def __len__(self) -> int:
        return len(self.tiles)


def _check_layout_args(height: int, width: int, tile: int, overlap: int, patch: int) -> None:
    """One-line ConfigErrors for every argument :func:`plan_tiles` cannot honour."""
    if patch <= 0:
        raise ConfigError(f"patch size must be positive, got {patch}")
    if tile <= 0:
        raise ConfigError(f"tile must be a positive number of pixels, got {tile}")
    if overlap < 0:
        raise ConfigError(f"overlap must not be negative, got {overlap} px")
    if tile % patch:
        lo = max(patch, tile // patch * patch)
        raise ConfigError(f"tile {tile} px is not a multiple of the patch size {patch}; use {lo} or {lo + patch}")
    if overlap >= tile:
        raise ConfigError(f"overlap {overlap} px must be smaller than the tile {tile} px")
    rounded = -(-overlap // patch) * patch
    if rounded >= tile:
        raise ConfigError(
            f"overlap {overlap} px rounds up to {rounded} px (whole {patch}-px patches), not smaller than the "
            f"tile {tile} px; lower the overlap"
        )
    for side, size in (("height", height), ("width", width)):
        if size <= 0 or size % patch:
            raise ConfigError(
                f"slice {side} {size} px is not a positive multiple of the patch size {patch}; "
                f"size it with scaled_size()"
            )


def _axis_plan(n: int, t: int, o: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis, in tokens: (origin, owned start, owned stop) for an ``n``-token side.

    ``t`` tokens a tile, at least ``o`` tokens of overlap. The fewest tiles that cover the side are spread
    evenly between 0 and ``n - t`` (consecutive origins differ by at most ``t - o``, so every overlap is at
    least ``o``), which spends the slack on wider overlaps instead of one oversized last overlap. Owned
    ranges split each overlap at its middle: the midpoint between neighbouring tile centres, so each token
    belongs to the tile whose centre is nearest, where it lies farthest from that tile's borders.
    """
    if n <= t:
        return [(0, 0, n)]
    count = -(-(n - t) // (t - o)) + 1
    origins = [i * (n - t) // (count - 1) for i in range(count)]
    cuts = [0] + [(a + b + t) // 2 for a, b in zip(origins, origins[1:])] + [n]
    return [(a, cuts[i], cuts[i + 1]) for i, a in enumerate(origins)]


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, patch: int) -> TileLayout:
    """Cut a ``height`` x ``width`` slice (network pixels) into ``tile`` x ``tile`` tiles on the patch lattice.

    Every tile origin is a multiple of ``patch`` (so tiles share the slice's patch grid), neighbours overlap
    by at least ``overlap`` px rounded up to whole patches, the last tile along each axis is flush with the
    far edge, and a side shorter than ``tile`` gets one tile of that side's length. Each tile owns the
    tokens for which it is the tile whose border is farthest away; see :func:`_axis_plan`.

    Raises:
        ConfigError: ``tile`` not a multiple of ``patch``, ``overlap`` negative or not smaller than
            ``tile`` (after rounding up to patches), or a slice side not a positive multiple of ``patch``.
    """
    height, width, tile, overlap, patch = (int(v) for v in (height, width, tile, overlap, patch))
    _check_layout_args(height, width, tile, overlap, patch)
    t, o = tile // patch, -(-overlap // patch)
    row_plan = _axis_plan(height // patch, t, o)
    col_plan = _axis_plan(width // patch, t, o)
    tile_h, tile_w = min(t, height // patch) * patch, min(t, width // patch) * patch
    tiles = tuple(
        Tile(top=r * patch, left=c * patch, height=tile_h, width=tile_w, rows=(r0, r1), cols=(c0, c1), patch=patch)
        for r, r0, r1 in row_plan
        for c, c0, c1 in col_plan
    )
    return TileLayout(height=height, width=width, tile=tile, overlap=overlap, patch=patch, tiles=tiles)


def _device_of(backbone: Backbone, fallback: torch.device) -> torch.device:
    param = next(iter(backbone.parameters()), None)
    return param.device if param is not None else fallback


def _stitch_tiles(
    backbone: Backbone, pixels: torch.Tensor, layout: TileLayout, layers: list[int], batch_size: int
) -> BackboneOutput:
    """Encode the tiles in batches of equal-sized tiles and copy each tile's owned tokens into place."""
    import torch

    from emfm.backbones._base import BackboneOutput

    device = _device_of(backbone, pixels.device)
    grid_h, grid_w = layout.grid
    out: dict[Any, torch.Tensor] = {}  # "grid" or a layer index -> the stitched (1, C, H/p, W/p) grid
    cls: dict[int, torch.Tensor] = {}
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, tile in enumerate(layout.tiles):
        by_size.setdefault((tile.height, tile.width), []).append(index)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = torch.stack([pixels[(slice(None), *layout.tiles[i].pixel_slices())] for i in chunk])
            result = backbone.encode(batch.to(device), layers=layers or None)
            grids = {"grid": result.patch_grid, **{j: result.layers[j] for j in layers}}
            for name, value in grids.items():
                if name not in out:
                    out[name] = value.new_empty((1, value.shape[1], grid_h, grid_w))
                for b, i in enumerate(chunk):
                    tile = layout.tiles[i]
                    out[name][(0, slice(None), *tile.owned_global())] = value[(b, slice(None), *tile.owned_local())]
            for b, i in enumerate(chunk):
                cls[i] = result.cls[b]
    mean_cls = torch.stack([cls[i] for i in range(len(layout))]).mean(0, keepdim=True)
    return BackboneOutput(patch_grid=out.pop("grid"), cls=mean_cls, layers={j: out[j] for j in layers})


def encode_tiled(
    backbone: Backbone,
    pixels: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    layers: Sequence[int] = (),
    batch_size: int = 4,
) -> BackboneOutput:
    """Encode one slice through overlapping tiles and stitch the tiles' centres into one token grid.

    Args:
        backbone: any :class:`~emfm.backbones.Backbone`; it is put in eval mode for the call (features are
            deterministic, and independent of ``batch_size``) and given back in the mode it was in.
        pixels: (3, H, W), normalised, at network size (H, W multiples of the patch; see :func:`scaled_size`).
        tile, overlap: see :func:`plan_tiles`.
        layers: block indices (negative from the end) to stitch besides the final grid, keyed as given.
        batch_size: most tiles per backbone call; tiles of one size are batched together.

    Returns:
        BackboneOutput with ``patch_grid`` and each of ``layers`` as (1, C, H/p, W/p) grids, on the backbone's
        device. ``cls`` is (1, C), the unweighted mean of the tiles' class tokens: no tile sees the whole
        slice, and averaging is the simplest summary that does not favour any tile. A slice that fits in one
        tile goes through one plain ``backbone.encode`` call, so it is bit-identical to the untiled path.

    Raises:
        ConfigError: ``pixels`` not (C, H, W), ``batch_size`` below 1, or a bad layout (see :func:`plan_tiles`).
    """
    import torch

    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ConfigError(f"encode_tiled expects one slice's pixels shaped (3, H, W), got {shape}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    layout = plan_tiles(
        int(pixels.shape[-2]), int(pixels.shape[-1]), tile=tile, overlap=overlap, patch=backbone.patch_size
    )
    wanted = list(dict.fromkeys(int(j) for j in layers))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            if len(layout) == 1:
                device = _device_of(backbone, pixels.device)
                return backbone.encode(pixels[None].to(device), layers=wanted or None)
            return _stitch_tiles(backbone, pixels, layout, wanted, batch_size)
    finally:
        backbone.train(was_training)
