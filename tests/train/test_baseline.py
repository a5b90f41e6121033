"""The from-scratch U-Net baseline: same loop as the foundation-model runs, a self-contained checkpoint,
and label budgets that pick the same slices for a seed and never touch the validation split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from emfm.backbones import create_backbone
from emfm.baselines import NO_WEIGHTS
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import read_info
from emfm.predict.runner import predict_volume
from emfm.train.run import train_run
from tests.helpers import synthetic_slice


def unet_config(train, tmp_path, **kw):
    base = {"backbone": "unet-small", "train": train, "cache_dir": str(tmp_path / "cache"), "epochs": 2,
            "crop": 32, "crops_per_epoch": 4, "min_steps": 0, "loss": "dice_ce"}
    return TrainConfig.from_dict({**base, **kw})


def test_scratch_backbone_fills_in_its_network_and_refuses_heads_and_adapters():
    cfg = TrainConfig.from_dict({"backbone": "unet", "train": "lucchi_pp"})
    assert (cfg.head, cfg.adapter, cfg.scale) == ("unet", "scratch", 1.0)
    with pytest.raises(ConfigError, match="no --head dpt"):
        TrainConfig.from_dict({"backbone": "unet", "train": "lucchi_pp", "head": "dpt"})
    with pytest.raises(ConfigError, match="no pretrained backbone to adapt with lora"):
        TrainConfig.from_dict({"backbone": "unet", "train": "lucchi_pp", "adapter": "lora"})
    with pytest.raises(ConfigError, match="adapter 'scratch' trains a from-scratch model"):
        TrainConfig.from_dict({"backbone": "dinov2-s", "train": "lucchi_pp", "adapter": "scratch"})
    backbone = create_backbone("unet")
    assert backbone.weights_id == NO_WEIGHTS and sum(p.numel() for p in backbone.parameters()) == 0


def test_unet_trains_reloads_with_identical_metrics_and_predicts_a_volume(datasets, tmp_path):
    a, _ = datasets
    out = tmp_path / "unet"
    m = train_run(unet_config(a, tmp_path, augment=["hflip"], intensity_augment=True), out, progress=False)
    assert m["run"]["from_scratch"] and m["run"]["adapter"] == "scratch" and m["run"]["head"] == "unet-small"
    assert m["features"] == {"computed": 0, "cached": 0}
    assert m["trainable_params"]["adapter"] == 0 and m["trainable_params"]["head"] > 400_000
    assert m["train_memory"]["peak_resident_mb"] > 0
    info = read_info(out / "checkpoint.safetensors")
    assert (info.backbone, info.weights_id, info.in_channels) == ("unet-small", NO_WEIGHTS, 0)
    again = evaluate_run(out, progress=False)
    assert again["test"][a]["fg_iou"] == m["test"][a]["fg_iou"]
    assert again["test"][a]["dice"] == m["test"][a]["dice"]

    rng = np.random.default_rng(5)
    volume = np.stack([synthetic_slice(rng, shape=(40, 56))[0] for _ in range(3)])
    tifffile.imwrite(tmp_path / "vol.tif", volume, photometric="minisblack")
    predict_volume(out, tmp_path / "vol.tif", tmp_path / "pred.tif", progress=False)
    pred = tifffile.imread(tmp_path / "pred.tif")
    assert pred.shape == volume.shape and set(np.unique(pred)) <= {0, 1}


def test_label_budget_is_seeded_spread_and_kept_apart_from_validation(datasets, tmp_path):
    a, _ = datasets

    def train_ids(seed, name):
        m = train_run(unet_config(a, tmp_path, label_budget=3, seed=seed, epochs=1), tmp_path / name, progress=False)
        splits = json.loads((tmp_path / name / "splits.json").read_text())[a]
        assert m["train_slices"] == {a: 3} and m["run"]["label_budget"] == 3
        assert not set(splits["train"]) & set(splits["val"])
        return splits["train"]

    first, again, other = train_ids(0, "s0"), train_ids(0, "s0b"), train_ids(1, "s1")
    assert first == again and first != other


def test_a_time_budget_ends_training_and_keeps_a_model(datasets, tmp_path):
    a, _ = datasets
    m = train_run(unet_config(a, tmp_path, epochs=50, max_minutes=1e-4), tmp_path / "timed", progress=False)
    assert 1 <= m["epochs_run"] < 50 and (tmp_path / "timed" / "checkpoint.safetensors").is_file()
