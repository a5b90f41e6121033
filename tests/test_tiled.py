"""Tiled encoding: the layout covers the slice on the patch lattice, stitching puts every token in place."""

from __future__ import annotations

import math

import pytest
import torch

from emfm.backbones._base import Backbone, BackboneOutput
from emfm.errors import ConfigError
from emfm.tiled import encode_tiled, plan_tiles
from emfm.transforms import scaled_size

# (height, width, tile, overlap, patch): Lucchi++ and VNC at native scale, patch 16, a side shorter than one
# tile, zero overlap, an overlap that is not whole patches, a stride of one patch (tiles two apart overlap),
# and a slice that is exactly one tile.
LAYOUTS = [
    (770, 1022, 518, 70, 14),
    (1022, 1022, 518, 70, 14),
    (768, 1024, 512, 70, 16),
    (140, 56, 70, 14, 14),
    (42, 700, 70, 0, 14),
    (154, 98, 56, 20, 14),
    (210, 126, 56, 41, 14),
    (98, 98, 98, 14, 14),
]


class StandIn(Backbone):
    """The Backbone attributes, no weights, and a record of every encode call (shape, mode)."""

    def __init__(self, patch: int = 14, embed_dim: int = 6, num_layers: int = 3) -> None:
        super().__init__()
        self.name, self.family, self.patch_size, self.embed_dim = "stand-in", "test", patch, embed_dim
        self.num_layers, self.mean, self.std, self.weights_id = num_layers, (0.5,) * 3, (0.5,) * 3, "stand-in"
        self.lora_target_modules, self.model = [], torch.nn.Identity()
        self.calls: list[tuple[tuple[int, ...], bool]] = []


class CoordBackbone(StandIn):
    """Token (i, j) reports the pixel at its patch's top-left corner (channels 0-1), its own local row and
    column (2-3) and its tile's token grid size (4-5); layer k adds 1000 * (k mod depth + 1)."""

    def encode(self, pixels, layers=None):
        self.calls.append((tuple(pixels.shape), self.training))
        b, _, h, w = pixels.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        corner = pixels[:, :2, :: self.patch_size, :: self.patch_size]
        rows = torch.arange(gh, dtype=pixels.dtype).view(1, 1, gh, 1).expand(b, 1, gh, gw)
        cols = torch.arange(gw, dtype=pixels.dtype).view(1, 1, 1, gw).expand(b, 1, gh, gw)
        size = torch.tensor([gh, gw], dtype=pixels.dtype).view(1, 2, 1, 1).expand(b, 2, gh, gw)
        grid = torch.cat([corner, rows, cols, size], dim=1)
        extra = {k: grid + 1000 * (k % self.num_layers + 1) for k in (layers or [])}
        return BackboneOutput(grid, grid.mean((2, 3)), extra)


class LinearBackbone(StandIn):
    """A per-patch linear map (one per block): features that do not depend on where a patch lies."""

    def __init__(self, patch: int = 14) -> None:
        super().__init__(patch=patch, embed_dim=8, num_layers=2)
        gen = torch.Generator().manual_seed(0)
        self.model = torch.nn.ModuleList(torch.nn.Conv2d(3, 8, patch, stride=patch) for _ in range(2))
        for conv in self.model:
            conv.weight.data = torch.randn(conv.weight.shape, generator=gen) * 0.05
        self.cls_token = torch.nn.Parameter(torch.randn(8, generator=gen))

    def encode(self, pixels, layers=None):
        self.calls.append((tuple(pixels.shape), self.training))
        extra = {k: self.model[k % self.num_layers](pixels) for k in (layers or [])}
        return BackboneOutput(self.model[-1](pixels), self.cls_token.expand(pixels.shape[0], -1), extra)


def coordinate_pixels(height: int, width: int) -> torch.Tensor:
    pixels = torch.zeros(3, height, width)
    pixels[0] = torch.arange(height, dtype=torch.float32)[:, None]
    pixels[1] = torch.arange(width, dtype=torch.float32)[None, :]
    return pixels


def inner_border_distance(local: int, size: int, origin: int, side: int) -> float:
    """Tokens between a token and its tile's nearest border that faces another tile (inf if none does)."""
    before = local if origin > 0 else math.inf
    after = size - 1 - local if origin + size < side else math.inf
    return min(before, after)


# -- layout -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,tile,overlap,patch", LAYOUTS)
def test_tiles_cover_the_slice_on_the_patch_lattice_and_end_flush(height, width, tile, overlap, patch):
    layout = plan_tiles(height, width, tile=tile, overlap=overlap, patch=patch)
    covered = torch.zeros(height, width, dtype=torch.bool)
    for t in layout.tiles:
        assert t.top % patch == 0 and t.left % patch == 0
        assert (t.height, t.width) == (min(tile, height), min(tile, width))
        assert t.top + t.height <= height and t.left + t.width <= width
        covered[t.pixel_slices()] = True
    assert covered.all()
    least = -(-overlap // patch) * patch
    for origins, size, side in (
        (sorted({t.top for t in layout.tiles}), layout.tiles[0].height, height),
        (sorted({t.left for t in layout.tiles}), layout.tiles[0].width, width),
    ):
        assert origins[0] == 0 and origins[-1] + size == side
        assert all(b - a <= size - least for a, b in zip(origins, origins[1:])), "an overlap is too small"


@pytest.mark.parametrize("height,width,tile,overlap,patch", LAYOUTS)
def test_owned_regions_partition_the_grid_and_keep_away_from_inner_borders(height, width, tile, overlap, patch):
    layout = plan_tiles(height, width, tile=tile, overlap=overlap, patch=patch)
    gh, gw = layout.grid
    count = torch.zeros(gh, gw, dtype=torch.int64)
    margin = overlap // 2 // patch
    for t in layout.tiles:
        count[t.owned_global()] += 1
        r0, c0, th, tw = t.top // patch, t.left // patch, t.height // patch, t.width // patch
        assert r0 <= t.rows[0] < t.rows[1] <= r0 + th and c0 <= t.cols[0] < t.cols[1] <= c0 + tw
        for r in range(*t.rows):
            assert inner_border_distance(r - r0, th, r0, gh) >= margin
        for c in range(*t.cols):
            assert inner_border_distance(c - c0, tw, c0, gw) >= margin
    assert torch.equal(count, torch.ones(gh, gw, dtype=torch.int64)), "owned regions overlap or leave holes"


def test_a_slice_that_fits_gets_one_tile_owning_everything():
    layout = plan_tiles(84, 56, tile=98, overlap=28, patch=14)
    assert len(layout) == 1 and layout.grid == (6, 4)
    (only,) = layout.tiles
    assert (only.top, only.left, only.height, only.width) == (0, 0, 84, 56)
    assert (only.rows, only.cols) == ((0, 6), (0, 4))


def test_lucchi_at_native_scale_needs_six_evenly_spread_tiles():
    layout = plan_tiles(770, 1022, tile=518, overlap=70, patch=14)
    assert len(layout) == 6
    assert sorted({t.top for t in layout.tiles}) == [0, 252] and sorted({t.left for t in layout.tiles}) == [0, 252, 504]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(tile=500), "tile 500 px is not a multiple of the patch size 14; use 490 or 504"),
        (dict(tile=0), "tile must be a positive"),
        (dict(overlap=-1), "overlap must not be negative"),
        (dict(overlap=518), "overlap 518 px must be smaller than the tile 518 px"),
        (dict(overlap=510), "overlap 510 px rounds up to 518 px"),
        (dict(height=775), "slice height 775 px is not a positive multiple of the patch size 14"),
        (dict(width=0), "slice width 0 px is not a positive multiple"),
        (dict(patch=0, tile=0), "patch size must be positive"),
    ],
)
def test_bad_layout_arguments_raise_one_line_config_errors(kwargs, message):
    args = dict(height=770, width=1022, tile=518, overlap=70, patch=14) | kwargs
    with pytest.raises(ConfigError) as info:
        plan_tiles(args.pop("height"), args.pop("width"), **args)
    assert message in str(info.value) and "\n" not in str(info.value)


# -- stitching --------------------------------------------------------------------------------------------

STITCH_CASES = [  # (height, width, tile, overlap, patch)
    (154, 98, 56, 20, 14),
    (42, 252, 70, 14, 14),
    (210, 126, 56, 41, 14),
    (112, 176, 64, 16, 16),
    (770, 1022, 518, 70, 14),
]


@pytest.mark.parametrize("height,width,tile,overlap,patch", STITCH_CASES)
def test_every_stitched_token_comes_from_its_own_place_in_the_slice(height, width, tile, overlap, patch):
    bb = CoordBackbone(patch=patch)
    out = encode_tiled(bb, coordinate_pixels(height, width), tile=tile, overlap=overlap, layers=[0, -1])
    gh, gw = height // patch, width // patch
    grid = out.patch_grid[0]
    assert out.patch_grid.shape == (1, 6, gh, gw) and out.cls.shape == (1, 6)
    assert torch.equal(grid[0], (torch.arange(gh) * patch).float()[:, None].expand(gh, gw))
    assert torch.equal(grid[1], (torch.arange(gw) * patch).float()[None, :].expand(gh, gw))
    assert torch.equal(out.layers[0], out.patch_grid + 1000) and torch.equal(out.layers[-1], out.patch_grid + 3000)
    n_tiles = len(plan_tiles(height, width, tile=tile, overlap=overlap, patch=patch))
    assert len(bb.calls) > 1 and sum(shape[0] for shape, _ in bb.calls) == n_tiles


@pytest.mark.parametrize("height,width,tile,overlap,patch", STITCH_CASES)
def test_each_token_is_taken_from_the_tile_where_it_lies_farthest_from_a_border(height, width, tile, overlap, patch):
    layout = plan_tiles(height, width, tile=tile, overlap=overlap, patch=patch)
    grid = encode_tiled(CoordBackbone(patch=patch), coordinate_pixels(height, width), tile=tile, overlap=overlap)
    local = grid.patch_grid[0, 2:4].long()
    size = grid.patch_grid[0, 4:6].long()
    gh, gw = layout.grid
    row_tiles = sorted({(t.top // patch, t.height // patch) for t in layout.tiles})
    col_tiles = sorted({(t.left // patch, t.width // patch) for t in layout.tiles})
    for axis, tiles, side in ((0, row_tiles, gh), (1, col_tiles, gw)):
        for r in range(gh):
            for c in range(gw):
                g, i, n = (r, c)[axis], int(local[axis, r, c]), int(size[axis, r, c])
                chosen = inner_border_distance(i, n, g - i, side)
                best = max(inner_border_distance(g - o, n, o, side) for o, n in tiles if o <= g < o + n)
                assert chosen == best, f"token {(r, c)} came from a tile nearer its border (axis {axis})"


def test_a_slice_that_fits_one_tile_is_one_plain_encode_call_in_eval_mode():
    bb = CoordBackbone()
    bb.train()
    out = encode_tiled(bb, coordinate_pixels(84, 56), tile=98, overlap=28)
    assert bb.calls == [((1, 3, 84, 56), False)]
    assert bb.training, "the backbone's mode was not given back"
    assert out.patch_grid.shape == (1, 6, 6, 4)


def test_tiles_run_in_eval_mode_in_batches_no_larger_than_asked():
    bb = CoordBackbone()
    bb.train()
    encode_tiled(bb, coordinate_pixels(210, 126), tile=56, overlap=41, batch_size=3)
    assert bb.calls and all(shape[0] <= 3 and shape[1:] == (3, 56, 56) and not mode for shape, mode in bb.calls)
    assert bb.training


@pytest.mark.parametrize("height,width,tile,overlap", [(154, 98, 56, 20), (98, 238, 70, 28), (210, 126, 56, 41)])
def test_position_independent_features_are_the_same_tiled_and_untiled(height, width, tile, overlap):
    bb = LinearBackbone()
    pixels = torch.randn(3, height, width, generator=torch.Generator().manual_seed(1))
    tiled = encode_tiled(bb, pixels, tile=tile, overlap=overlap, layers=[0])
    with torch.inference_mode():
        whole = bb.encode(pixels[None], layers=[0])
    assert len(bb.calls) > 2
    torch.testing.assert_close(tiled.patch_grid, whole.patch_grid, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled.layers[0], whole.layers[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled.cls, whole.cls, atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [LinearBackbone, "vit"], ids=["linear", "tiny-vit"])
def test_the_result_does_not_depend_on_the_batch_size(make, tiny_backbone_dir):
    from emfm.backbones import create_backbone

    bb = create_backbone(str(tiny_backbone_dir)) if make == "vit" else make()
    pixels = torch.randn(3, 154, 126, generator=torch.Generator().manual_seed(2))
    outs = [encode_tiled(bb, pixels, tile=56, overlap=20, layers=[0], batch_size=n) for n in (1, 2, 3, 16)]
    for other in outs[1:]:
        torch.testing.assert_close(other.patch_grid, outs[0].patch_grid, atol=1e-6, rtol=0)
        torch.testing.assert_close(other.layers[0], outs[0].layers[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(other.cls, outs[0].cls, atol=1e-6, rtol=0)


def test_the_tiny_vit_is_bit_identical_in_one_tile_and_right_sized_in_many(tiny_backbone_dir):
    from emfm.backbones import create_backbone

    bb = create_backbone(str(tiny_backbone_dir)).eval()
    pixels = torch.randn(3, 56, 84, generator=torch.Generator().manual_seed(3))
    one = encode_tiled(bb, pixels, tile=98, overlap=28, layers=[0, -1])
    with torch.inference_mode():
        ref = bb.encode(pixels[None], layers=[0, -1])
    assert torch.equal(one.patch_grid, ref.patch_grid) and torch.equal(one.cls, ref.cls)
    assert all(torch.equal(one.layers[k], ref.layers[k]) for k in (0, -1))
    many = encode_tiled(bb, torch.randn(3, 98, 140), tile=56, overlap=14, layers=[-1])
    assert many.patch_grid.shape == (1, bb.embed_dim, 7, 10) and many.layers[-1].shape == (1, bb.embed_dim, 7, 10)
    assert many.cls.shape == (1, bb.embed_dim) and torch.isfinite(many.patch_grid).all()


def test_encode_tiled_refuses_a_batch_or_a_zero_batch_size():
    with pytest.raises(ConfigError, match=r"shaped \(3, H, W\), got \(1, 3, 56, 56\)"):
        encode_tiled(CoordBackbone(), torch.zeros(1, 3, 56, 56), tile=56, overlap=14)
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        encode_tiled(CoordBackbone(), torch.zeros(3, 56, 56), tile=56, overlap=14, batch_size=0)


# -- sizes and settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,scale,patch,expected",
    [
        ((768, 1024), 1.0, 14, (770, 1022)),
        ((768, 1024), 1.0, 16, (768, 1024)),
        ((1024, 1024), 1.0, 14, (1022, 1022)),
        ((768, 1024), 0.5, 14, (378, 518)),
        ((768, 1024), 2.0, 14, (1540, 2044)),
        ((10, 10), 0.01, 14, (14, 14)),
    ],
)
def test_scaled_size_rounds_each_side_to_the_nearest_patch(shape, scale, patch, expected):
    assert scaled_size(shape, scale, patch) == expected


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf")])
def test_scaled_size_refuses_a_non_positive_scale(scale):
    with pytest.raises(ConfigError, match="pixel scale must be a positive number"):
        scaled_size((768, 1024), scale, 14)
