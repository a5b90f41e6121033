"""Crop training: windows on the patch lattice, the cached grid cut exactly where the pixels are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emfm.train.augment import IntensityAugment
from emfm.train.crops import CropItems, CropSource, WholeItems, crop_origin
from emfm.transforms import Preprocessing

PATCH = 14


def coordinate_source(h_tokens: int, w_tokens: int, dataset: int = 0) -> CropSource:
    """A slice whose mask, pixels and token grid all say where they are: mask/unit pixel (y, x) holds
    y * 10000 + x; token (r, c) holds the coordinates of its patch's top-left pixel."""
    H, W = h_tokens * PATCH, w_tokens * PATCH
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    coords = (yy * 10000 + xx).long()
    rows, cols = torch.meshgrid(torch.arange(h_tokens), torch.arange(w_tokens), indexing="ij")
    grid = torch.stack([rows * PATCH, cols * PATCH]).float()
    return CropSource(mask=coords, grids=[grid, grid + 0.5], unit=coords.double(), dataset=dataset)


def items(sources, **kw):
    prep = Preprocessing(518, PATCH, mean=(0.0,) * 3, std=(1.0,) * 3)
    kw.setdefault("want_pixels", True)
    return CropItems(sources, crop=3 * PATCH, patch=PATCH, length=40, preprocessing=prep, seed=7, **kw)


def test_a_cropped_cached_grid_lines_up_with_its_pixel_and_mask_crop():
    ds = items([coordinate_source(9, 11), coordinate_source(5, 4, dataset=1)])
    for index in range(len(ds)):
        item = ds[index]
        top_left = int(item["mask"][0, 0])
        y0, x0 = divmod(top_left, 10000)
        assert y0 % PATCH == 0 and x0 % PATCH == 0  # on the patch lattice
        assert item["mask"].shape == (3 * PATCH, 3 * PATCH)
        grid = item["grids"][0]
        assert grid.shape == (2, 3, 3)
        for r in range(3):
            for c in range(3):  # each token sits on the pixels it was computed from
                assert (grid[0, r, c].item(), grid[1, r, c].item()) == (y0 + r * PATCH, x0 + c * PATCH)
        assert torch.equal(item["grids"][1], grid + 0.5)  # every layer is cut at the same window
        pixel_codes = item["pixels"][0].double()
        assert torch.equal(pixel_codes.long(), item["mask"])  # normalise with mean 0, std 1 keeps the codes


def test_crops_are_repeatable_per_epoch_and_change_between_epochs():
    ds = items([coordinate_source(9, 11)])
    first = [int(ds[i]["mask"][0, 0]) for i in range(len(ds))]
    assert first == [int(ds[i]["mask"][0, 0]) for i in range(len(ds))]
    ds.set_epoch(1)
    assert first != [int(ds[i]["mask"][0, 0]) for i in range(len(ds))]


def test_balance_draws_each_training_set_about_equally():
    sources = [coordinate_source(4, 4, dataset=0) for _ in range(9)] + [coordinate_source(4, 4, dataset=1)]
    ds = CropItems(sources, crop=PATCH, patch=PATCH, length=400, preprocessing=Preprocessing(56, PATCH),
                   want_pixels=False, balance=True, seed=0)
    share = np.mean([ds[i]["source"] for i in range(len(ds))])
    assert 0.4 < share < 0.6
    plain = CropItems(sources, crop=PATCH, patch=PATCH, length=400, preprocessing=Preprocessing(56, PATCH),
                      want_pixels=False, balance=False, seed=0)
    assert np.mean([plain[i]["source"] for i in range(len(plain))]) < 0.2


def test_crop_origin_covers_short_sides_whole():
    rng = np.random.default_rng(0)
    assert crop_origin((20, 28), 42, PATCH, rng) == (0, 0)
    origins = {crop_origin((70, 70), 28, PATCH, rng) for _ in range(200)}
    assert origins == {(y, x) for y in (0, 14, 28, 42) for x in (0, 14, 28, 42)}


def test_intensity_augmentation_is_seeded_and_stays_in_range():
    unit = torch.rand(32, 32)
    aug = IntensityAugment(prob=1.0)
    a = aug(unit, np.random.default_rng(3))
    b = aug(unit, np.random.default_rng(3))
    c = aug(unit, np.random.default_rng(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_whole_items_give_each_source_once_with_its_grids():
    sources = [coordinate_source(3, 4), coordinate_source(2, 2, dataset=1)]
    ds = WholeItems(sources, preprocessing=Preprocessing(56, PATCH), want_pixels=False)
    assert len(ds) == 2 and ds.sources_index == [0, 1]
    assert ds[0]["grids"][0].shape == (2, 3, 4) and "pixels" not in ds[0]


@pytest.mark.parametrize("bad", [{"crop": 20}, {"scale": 1.0, "tile": 150}])
def test_crop_and_tile_must_sit_on_the_patch_lattice(bad, tiny_backbone_dir, datasets, tmp_path):
    from emfm.config import TrainConfig
    from emfm.errors import ConfigError
    from emfm.train.run import train_run

    config = TrainConfig.from_dict({"backbone": str(tiny_backbone_dir), "train": datasets[0], "resolution": 56,
                                    "cache_dir": str(tmp_path / "c"), **bad})
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        train_run(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize("align", ["none", "mixed"])
def test_crops_per_set_gives_each_training_set_its_single_set_share(align, tiny_backbone_dir, datasets, tmp_path):
    """With crops_per_set a joint epoch holds crops_per_epoch crops of each set (mixed: exactly; none: as many
    in all), so each set is seen as often as in its own run; without it the sets share crops_per_epoch."""
    from emfm.config import TrainConfig
    from emfm.runsets import load_stacks
    from emfm.train.fit import make_loaders
    from emfm.train.run import prepare, resolve, resolve_config

    def loader_sources(**kw) -> list[int]:
        cfg = resolve_config(TrainConfig.from_dict(dict(
            backbone=str(tiny_backbone_dir), train=list(datasets), resolution=56, crop=28, crops_per_epoch=6,
            batch_size=2, align=align, cache_dir=str(tmp_path / "cache"), **kw)))
        data = load_stacks(cfg, progress=False)
        plan = resolve(cfg, data)
        loader, _, _ = make_loaders(plan, data, prepare(plan, data, progress=False), packed=False)
        return [int(s) for batch in loader for s in (item["source"] for item in batch)]

    shared, per_set = loader_sources(), loader_sources(crops_per_set=True)
    assert len(shared) == 6 and len(per_set) == 12
    if align == "mixed":
        assert per_set.count(0) == per_set.count(1) == 6 and shared.count(0) == shared.count(1) == 3
