"""The cosine learning-rate schedule: its values by step, and that a run trained with it differs only there."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.train.module import cosine_with_warmup
from emfm.train.run import train_run


def _lrs(total: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = cosine_with_warmup(opt, total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return seen


def test_warm_up_then_cosine_to_zero():
    lrs = _lrs(100)  # 5 warm-up steps: 1/5 .. 5/5, then cos over the 95 left
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5 + 95 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * (95 // 2) / 95)))
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 94 / 95)))
    assert lrs[-1] < 0.001 and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_too_few_steps_to_decay_only_warm_up():
    assert _lrs(1) == pytest.approx([1.0])


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(backbone="x", train=("lucchi_pp",), lr_schedule="step")


def test_a_cosine_run_trains_differently_and_records_its_schedule(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    base = {"backbone": str(tiny_backbone_dir), "train": a, "cache_dir": str(tmp_path / "cache"), "epochs": 3,
            "resolution": 56, "lr": 1e-2, "min_steps": 0, "head": "multilinear", "layers": [0, 1]}
    train_run(TrainConfig.from_dict(base), tmp_path / "constant", progress=False)
    train_run(TrainConfig.from_dict({**base, "lr_schedule": "cosine"}), tmp_path / "cosine", progress=False)
    saved = yaml.safe_load((tmp_path / "cosine" / "config.yaml").read_text())
    assert saved["lr_schedule"] == "cosine"
    w0 = load_file(str(tmp_path / "constant" / "checkpoint.safetensors"))
    w1 = load_file(str(tmp_path / "cosine" / "checkpoint.safetensors"))
    assert w0.keys() == w1.keys()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.startswith("head."))
