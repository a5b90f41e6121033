"""``self-training``: only the head changes; it never reads the target's labels; a seed repeats it; it trains with
the run's own supervised loss when the run's data are found, and without (saying why) when they are not."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from emfm.adapt import adapt_run
from emfm.adapt.teacher import ema_update
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import read_info
from tests.adapt.helpers import tensors

FEW = {"steps": 3}


def adapt(run, target, out, **settings):
    return adapt_run(run, f"folder:{target}", "self-training", out, settings={**FEW, **settings}, progress=False)


def adapted_tensors(run, target, out, **settings):
    adapt(run, target, out, **settings)
    return tensors(out)


@pytest.mark.parametrize("run", ["linear_run", "fusion_run", "lora_run", "unet_run"])
def test_only_the_head_changes_and_the_run_evaluates(run, target_dir, tmp_path, request):
    source = request.getfixturevalue(run)
    out = tmp_path / "adapted"
    record = adapt(source, target_dir, out)
    old, new = tensors(source), tensors(out)
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old if k.startswith("adapter."))
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("head.") and "running" not in k)
    assert read_info(out / "checkpoint.safetensors") == read_info(source / "checkpoint.safetensors")
    assert len(record["confident_fraction"]) == 3 and all(0 <= f <= 1 for f in record["confident_fraction"])
    assert record["source"]["used"] and record["encoding"] == ("live" if run in ("lora_run", "unet_run") else "cached")
    name = f"folder:{target_dir}"
    evaluated = evaluate_run(out, test=[name], progress=False)
    assert 0.0 <= evaluated["test"][name]["fg_iou"] <= 1.0
    assert ("shift_note" in evaluated) == (run == "unet_run")  # a U-Net has no backbone features to compare


def test_target_labels_are_never_read(linear_run, target_dir, tmp_path):
    first = adapted_tensors(linear_run, target_dir, tmp_path / "a")
    for mask in (target_dir / "masks").iterdir():  # every label inverted: foreground becomes background
        Image.fromarray(np.where(np.asarray(Image.open(mask)) > 0, 0, 255).astype(np.uint8)).save(mask)
    inverted = adapted_tensors(linear_run, target_dir, tmp_path / "b")
    shutil.rmtree(target_dir / "masks")
    removed = adapted_tensors(linear_run, target_dir, tmp_path / "c")
    for key in first:
        assert torch.equal(first[key], inverted[key]) and torch.equal(first[key], removed[key]), key


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(fusion_run, target_dir, tmp_path):
    a = adapted_tensors(fusion_run, target_dir, tmp_path / "a", seed=3)
    b = adapted_tensors(fusion_run, target_dir, tmp_path / "b", seed=3)
    c = adapted_tensors(fusion_run, target_dir, tmp_path / "c", seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_without_the_runs_data_it_trains_on_the_target_alone_and_says_so(linear_run, target_dir, tmp_path):
    moved = tmp_path / "moved_run"
    shutil.copytree(linear_run, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["train"] = config["test"] = [f"folder:{tmp_path / 'gone'}"]
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    record = adapt(moved, target_dir, tmp_path / "adapted")
    assert not record["source"]["used"] and "not found" in record["source"]["reason"]
    assert record["source_loss"] is None
    off = adapt(linear_run, target_dir, tmp_path / "off", source_weight=0)
    assert off["source"] == {"used": False, "reason": "source_weight is 0"}


def test_a_domain_bn_run_self_trains_into_the_targets_domain(dbn_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    record = adapt(dbn_run, target_dir, out)
    assert record["per_domain"] and record["source"]["used"] and len(record["source"]["train_slices"]) == 2
    assert read_info(out / "checkpoint.safetensors").domains == (f"folder:{target_dir.resolve()}",)
    assert not any(".norms.1." in k for k in tensors(out))


def test_the_teacher_is_an_exponential_moving_average_of_the_student():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for key, value in teacher.state_dict().items():
        assert torch.allclose(value, 0.9 * before[key] + 0.1 * student.state_dict()[key])
