"""The levers of a model worth handing over, end to end on tiny data: tiled native-scale features,
heads that read several blocks and the pixels, crops and augmentation variants of the cache."""

from __future__ import annotations

import json

import pytest

from emfm.config import TrainConfig
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import read_info
from emfm.train.fit import kept_model_warnings
from emfm.train.run import train_run

TILED = {"scale": 1.0, "tile": 28, "tile_overlap": 14}


def config(backbone, train, tmp_path, **kw):
    base = {"backbone": str(backbone), "train": train, "cache_dir": str(tmp_path / "cache"), "epochs": 2,
            "resolution": 56, "lr": 1e-3, "min_steps": 0}
    return TrainConfig.from_dict({**base, **kw})


@pytest.mark.parametrize("head,layers", [("linear", None), ("multilinear", [0, 1]), ("dpt", [0, 1, 0, 1]),
                                         ("fusion", [0, 1])])
def test_every_head_trains_tiled_on_crops_and_reloads_with_identical_metrics(
    head, layers, tiny_backbone_dir, datasets, tmp_path
):
    a, _ = datasets
    out = tmp_path / head
    cfg = config(tiny_backbone_dir, a, tmp_path, head=head, layers=layers, crop=28, crops_per_epoch=6, **TILED)
    m = train_run(cfg, out, progress=False)
    info = read_info(out / "checkpoint.safetensors")
    assert info.head == head and info.scale == 1.0 and info.tile == 28
    assert list(info.layers) == (layers or [1])
    again = evaluate_run(out, progress=False)
    assert again["test"][a]["fg_iou"] == m["test"][a]["fg_iou"]
    assert again["test"][a]["dice"] == m["test"][a]["dice"]
    assert m["run"]["layers"] == (layers or [1]) and m["run"]["crop"] == 28


def test_augmentation_variants_are_cached_apart_and_reused(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    first = train_run(config(tiny_backbone_dir, a, tmp_path, augment=["hflip", "rot90"], crop=28), tmp_path / "r1",
                      progress=False)
    # 9 train slices x 3 variants + 1 val + 4 test, each encoded once
    assert first["features"] == {"computed": 9 * 3 + 1 + 4, "cached": 0}
    second = train_run(config(tiny_backbone_dir, a, tmp_path, augment=["hflip"], crop=28, seed=1), tmp_path / "r2",
                       progress=False)
    assert second["features"] == {"computed": 0, "cached": 9 * 2 + 1 + 4}
    assert second["run"]["augment"] == ["identity", "hflip"]


def test_lora_reads_several_blocks_through_tiles(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    cfg = config(tiny_backbone_dir, a, tmp_path, adapter="lora", lora_rank=2, head="multilinear", layers=[0, 1],
                 crop=28, crops_per_epoch=4, augment=["vflip"], intensity_augment=True, **TILED)
    m = train_run(cfg, tmp_path / "lora", progress=False)
    assert m["trainable_params"]["adapter"] > 0 and m["features"] == {"computed": 0, "cached": 0}
    assert evaluate_run(tmp_path / "lora", progress=False)["test"][a]["fg_iou"] == m["test"][a]["fg_iou"]


def test_a_model_that_predicts_no_foreground_is_flagged(tiny_backbone_dir, datasets, tmp_path):
    import torch

    class Background:
        def eval(self):
            return self

        def _logits_and_targets(self, batch):
            return [torch.tensor([[[[5.0]], [[-5.0]]]])], [torch.zeros(1, 1, 1, dtype=torch.long)]

    warnings, fraction = kept_model_warnings(Background(), [[{}]], best_epoch=0, epochs_run=5)
    assert fraction == 0.0 and len(warnings) == 2
    assert "predicts no foreground" in warnings[0] and "first epoch" in warnings[1]
    assert kept_model_warnings(Background(), [[{}]], best_epoch=3, epochs_run=5)[0] == warnings[:1]


def test_the_warning_reaches_metrics_json(tiny_backbone_dir, tmp_path):
    import numpy as np
    from PIL import Image

    from tests.helpers import synthetic_slice

    root, rng = tmp_path / "empty", np.random.default_rng(0)
    for part, n in (("train", 8), ("test", 2)):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(n):  # no mitochondria anywhere: the model can only learn to say "none"
            img, mask = synthetic_slice(rng, (40, 56), n_blobs=0)
            Image.fromarray(img).save(root / part / "images" / f"{i}.png")
            Image.fromarray(mask * 255).save(root / part / "masks" / f"{i}.png")
    m = train_run(config(tiny_backbone_dir, f"folder:{root}", tmp_path, lr=5e-2, epochs=8), tmp_path / "none",
                  progress=False)
    assert m["val_foreground_predicted"] == 0 and any("predicts no foreground" in w for w in m["warnings"])
    saved = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert saved["warnings"] == m["warnings"]
