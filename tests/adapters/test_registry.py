"""Adapters are registered objects: a new method is one class and its registration, no edit elsewhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import torch

from emfm._settings import Settings, check_number
from emfm.adapters import ADAPTERS, Adapter, adapter_names, create_adapter
from emfm.backbones import create_backbone
from emfm.cli import build_parser
from emfm.config import TrainConfig
from emfm.errors import CheckpointFormatError, ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import load_checkpoint, read_info
from emfm.study.config import StudyConfig
from emfm.train.run import train_run


@dataclass(frozen=True)
class BiasSettings(Settings):
    what = "bias-tuning setting"
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_number("bias_tuning_scale", self.scale, minimum=0, exclusive_minimum=True)


class BiasTuning(Adapter):
    """A throwaway method (BitFit-like): train every bias of the backbone, keep them in the checkpoint."""

    name = "bias-tuning"
    summary = "train the backbone's biases (test only)"
    settings_type = BiasSettings
    trains_on = "pixels"

    def prepare(self, backbone) -> int:
        n = 0
        for pname, p in backbone.named_parameters():
            p.requires_grad_(pname.endswith(".bias"))
            n += p.numel() if p.requires_grad else 0
        backbone.train()
        return n

    def state(self, backbone) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in backbone.named_parameters() if n.endswith(".bias")}

    def load_state(self, backbone, tensors: Mapping[str, torch.Tensor]) -> None:
        missing = {n for n, _ in backbone.named_parameters() if n.endswith(".bias")} - set(tensors)
        if missing:
            raise CheckpointFormatError(f"missing biases {sorted(missing)[:2]}")
        backbone.load_state_dict(dict(tensors), strict=False)


@pytest.fixture
def bias_tuning():
    ADAPTERS.register(BiasTuning.name, BiasTuning)
    yield BiasTuning
    ADAPTERS.unregister(BiasTuning.name)


def test_built_in_adapters_declare_how_they_train():
    assert adapter_names()[:2] == ["frozen", "lora"]
    assert create_adapter("frozen").uses_cached_features
    lora = create_adapter("lora", {"rank": 4})
    assert not lora.uses_cached_features and lora.settings_dict() == {"rank": 4, "alpha": 32, "dropout": 0.0,
                                                                  "layout": "separate"}


def test_a_registered_throwaway_adapter_trains_reloads_and_is_offered_everywhere(
    bias_tuning, tiny_backbone_dir, datasets, tmp_path
):
    a, _ = datasets
    config = TrainConfig.from_dict({
        "backbone": str(tiny_backbone_dir), "train": a, "adapter": "bias-tuning", "bias_tuning_scale": 2.0,
        "epochs": 2, "resolution": 56, "lr": 1e-2, "cache_dir": str(tmp_path / "cache"),
    })
    assert config.adapter_settings == {"scale": 2.0}
    out = tmp_path / "run"
    metrics = train_run(config, out, progress=False)
    assert metrics["run"]["adapter"] == "bias-tuning" and metrics["trainable_params"]["adapter"] > 0
    assert metrics["features"] == {"computed": 0, "cached": 0}  # a pixel adapter never touches the cache

    info = read_info(out / "checkpoint.safetensors")
    assert info.adapter == "bias-tuning" and info.adapter_settings == {"scale": 2.0}
    segmenter, _ = load_checkpoint(out / "checkpoint.safetensors")
    trained = {n: p for n, p in segmenter.backbone.named_parameters() if n.endswith(".bias")}
    untouched = dict(create_backbone(str(tiny_backbone_dir)).named_parameters())
    assert any(not torch.equal(p, untouched[n]) for n, p in trained.items())  # the biases came back trained
    again = evaluate_run(out, progress=False)
    assert again["test"][a]["fg_iou"] == metrics["test"][a]["fg_iou"]
    assert json.loads((out / "metrics.json").read_text())["run"]["adapter_settings"] == {"scale": 2.0}

    # The CLI and the study validation take their choices from the registry.
    args = build_parser().parse_args(["train", "--adapter", "bias-tuning", "--bias-tuning-scale", "3"])
    assert args.adapter == "bias-tuning" and args.bias_tuning_scale == 3.0
    study = StudyConfig.from_dict({
        "name": "s", "backbones": ["b"], "adapters": ["frozen", "bias-tuning"], "train_sets": ["x"],
        "test_sets": ["x"], "seeds": [0],
    })
    assert "bias-tuning" in study.adapters


def test_a_setting_of_the_throwaway_adapter_is_checked_by_it(bias_tuning):
    with pytest.raises(ConfigError, match="bias_tuning_scale must be > 0"):
        TrainConfig.from_dict({"backbone": "b", "train": "x", "adapter": "bias-tuning", "bias_tuning_scale": 0})


def test_a_frozen_checkpoint_with_backbone_tensors_is_refused():
    with pytest.raises(CheckpointFormatError, match="written by another adapter"):
        create_adapter("frozen").load_state(None, {"x": torch.zeros(1)})
