"""End to end: frozen and LoRA, single and joint, on tiny synthetic data with a tiny random backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from emfm.backbones import create_backbone
from emfm.config import TrainConfig
from emfm.data import load_split
from emfm.errors import ConfigError, RunDirError, UnknownNameError
from emfm.evaluate.run import evaluate_run
from emfm.hardware import CPU_FLAGS, CPU_NO_BF16_NOTE, describe_hardware
from emfm.models.checkpoint import load_checkpoint
from emfm.train.run import train_run
from emfm.transforms import image_to_tensor, resized_shape


def config(backbone, train, tmp_path, **kw):
    kw.setdefault("epochs", 2)
    kw.setdefault("resolution", 56)
    return TrainConfig.from_dict(
        dict(backbone=str(backbone), train=train, cache_dir=str(tmp_path / "cache"), lr=1e-3, **kw)
    )


def hand_iou(run_dir, name):
    """Pooled IoU recomputed independently: checkpoint -> logits at the input size (the model's output)
    -> bilinear to the mask's native size -> argmax -> total intersection / total union."""
    segmenter, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    stack = load_split(name, "test", progress=False)
    inter = union = 0
    for img, mask in zip(stack.images, stack.masks):
        size = resized_shape(img.shape, info.resolution, info.patch_size)
        with torch.no_grad():
            grid = segmenter.backbone.encode(image_to_tensor(img, size, info.mean, info.std)[None]).patch_grid
            logits = torch.nn.functional.interpolate(segmenter.head([grid]), size=size, mode="bilinear")
            logits = torch.nn.functional.interpolate(logits, size=mask.shape, mode="bilinear")
        pred = logits.argmax(1)[0].numpy().astype(bool)
        inter += np.logical_and(pred, mask).sum()
        union += np.logical_or(pred, mask).sum()
    return inter / union


def test_frozen_single_metrics_match_a_hand_computation(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    out = tmp_path / "run"
    m = train_run(config(tiny_backbone_dir, a, tmp_path), out, progress=False)
    assert set(m["test"]) == {a} and m["test"][a]["n_slices"] == 4
    assert m["test"][a]["fg_iou"] == pytest.approx(hand_iou(out, a), abs=1e-9)
    assert m["trainable_params"]["adapter"] == 0 and m["trainable_params"]["head"] == 32 * 2 + 2 + 2 * 32
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"][a]["fg_iou"] == m["test"][a]["fg_iou"] and len(saved["train"]) == 2
    assert saved["run"]["precision"] == saved["run"]["precision_requested"] == "32"
    assert saved["hardware"] == {**describe_hardware(), "torch_threads": saved["hardware"]["torch_threads"]}
    for name in ("config.yaml", "env.json", "splits.json", "checkpoint.safetensors", "curve.png", "examples.png"):
        assert (out / name).is_file(), name
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits[a]["train"]) == 9 and len(splits[a]["val"]) == 1
    preds = tifffile.imread(next((out / "predictions").glob("*.tif")))
    assert preds.shape == (4, 40, 56) and set(np.unique(preds)) <= {0, 1}


def test_second_frozen_run_never_calls_the_backbone(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    train_run(config(tiny_backbone_dir, a, tmp_path), tmp_path / "r1", progress=False)
    backbone = create_backbone(str(tiny_backbone_dir))

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone ran although every feature was cached")

    backbone.encode = refuse
    m = train_run(config(tiny_backbone_dir, a, tmp_path, seed=1, head="deconv"), tmp_path / "r2",
                  progress=False, backbone=backbone)
    assert m["features"] == {"computed": 0, "cached": 10 + 4}


def test_reloaded_checkpoint_gives_identical_metrics(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    for adapter in ("frozen", "lora"):
        out = tmp_path / adapter
        m = train_run(config(tiny_backbone_dir, a, tmp_path, adapter=adapter), out, progress=False)
        again = evaluate_run(out, progress=False)
        assert again["test"][a]["fg_iou"] == m["test"][a]["fg_iou"]
        assert again["test"][a]["per_slice"] == m["test"][a]["per_slice"]


def test_lora_trains_only_adapters_and_head(tiny_backbone_dir, datasets, tmp_path):
    a, _ = datasets
    out = tmp_path / "lora"
    m = train_run(
        config(tiny_backbone_dir, a, tmp_path, adapter="lora", lora_rank=4, lora_alpha=8), out, progress=False
    )
    # rank 4 on q, k, v and the attention output of 2 blocks, width 32: 4 matrices x 2 x (4*32 + 32*4)
    assert m["trainable_params"]["adapter"] == 2 * 4 * (4 * 32 + 32 * 4)
    assert m["features"] == {"computed": 0, "cached": 0}
    segmenter, info = load_checkpoint(out / "checkpoint.safetensors")
    assert info.adapter == "lora" and info.adapter_settings["rank"] == 4
    # adapters changed from their zero init, so B is no longer zero somewhere
    b = [p for n, p in segmenter.backbone.named_parameters() if "lora_B" in n]
    assert b and any(p.abs().sum() > 0 for p in b)


def test_joint_training_reports_each_test_set_and_the_pool(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    m = train_run(config(tiny_backbone_dir, [a, b], tmp_path, balance=True), tmp_path / "joint", progress=False)
    assert set(m["test"]) == {a, b}
    pooled = m["test_pooled"]
    assert pooled["n_slices"] == 7 and 0 <= pooled["fg_iou"] <= 1
    lo, hi = sorted(m["test"][n]["fg_iou"] for n in (a, b))
    assert lo - 1e-12 <= pooled["fg_iou"] <= hi + 1e-12


def test_errors_before_any_compute(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    with pytest.raises(UnknownNameError, match="unknown head 'linaer'"):
        train_run(config(tiny_backbone_dir, a, tmp_path, head="linaer"), tmp_path / "x", progress=False)
    with pytest.raises(UnknownNameError, match="unknown dataset"):
        train_run(config(tiny_backbone_dir, "lucchi", tmp_path), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="smaller than the patch size"):
        train_run(config(tiny_backbone_dir, a, tmp_path, resolution=8), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "taken"
    train_run(config(tiny_backbone_dir, a, tmp_path, epochs=1), out, progress=False)
    with pytest.raises(RunDirError, match="already holds a different run"):
        train_run(config(tiny_backbone_dir, a, tmp_path, epochs=2), out, progress=False)


def test_training_on_a_folder_without_test_part_and_testing_on_it_is_refused(tiny_backbone_dir, tmp_path):
    from tests.helpers import write_folder_dataset

    name = write_folder_dataset(tmp_path / "d", 6, 0, (28, 28), seed=3)
    import shutil

    shutil.rmtree(tmp_path / "d" / "test")
    with pytest.raises(ConfigError, match="no test/ part"):
        train_run(config(tiny_backbone_dir, name, tmp_path), tmp_path / "x", progress=False)


def machine(*flags: str) -> dict:
    """This machine's hardware record with the CPU's flags replaced: exactly ``flags``, and no GPU."""
    hw = describe_hardware()
    hw["cpu"]["flags"] = {f: f in flags for f in CPU_FLAGS}
    return {**hw, "gpu": None}


@pytest.fixture()
def on_cpu(monkeypatch):
    """Train on a CPU of the test's choosing: ``on_cpu(*flags)`` fixes the flags precision is resolved from."""

    def use(*flags: str) -> dict:
        hw = machine(*flags)
        monkeypatch.setattr("emfm.hardware.describe_hardware", lambda: hw)
        monkeypatch.setattr("emfm.hardware.training_device", lambda: "cpu")
        return hw

    return use


def test_bf16_autocast_trains_and_scores(tiny_backbone_dir, datasets, tmp_path, on_cpu):
    a, _ = datasets
    on_cpu("avx2", "avx512f", "avx512_bf16")
    m = train_run(config(tiny_backbone_dir, a, tmp_path, precision="bf16", adapter="lora", lora_rank=2, epochs=1),
                  tmp_path / "bf16", progress=False)
    assert m["run"]["precision"] == m["run"]["precision_requested"] == "bf16"
    assert 0.0 <= m["test"][a]["fg_iou"] <= 1.0 and CPU_NO_BF16_NOTE not in m["warnings"]
    assert np.isfinite(m["train"][0]["train_loss"])


def test_a_frozen_bf16_run_encodes_in_bf16_into_cache_entries_apart_from_fp32(
    tiny_backbone_dir, datasets, tmp_path, on_cpu
):
    a, _ = datasets
    on_cpu("avx2", "avx512f", "amx_bf16", "amx_tile")
    bf16 = train_run(config(tiny_backbone_dir, a, tmp_path, precision="auto", epochs=1), tmp_path / "bf16",
                     progress=False)
    assert bf16["run"]["precision"] == "bf16" and bf16["features"]["cached"] == 0
    fp32 = train_run(config(tiny_backbone_dir, a, tmp_path, epochs=1), tmp_path / "fp32", progress=False)
    assert fp32["features"]["cached"] == 0  # the bf16 entries are not served to an fp32 run
    again = train_run(config(tiny_backbone_dir, a, tmp_path, precision="bf16", epochs=1), tmp_path / "bf16-again",
                      progress=False)
    assert again["features"]["computed"] == 0 and again["test"][a]["fg_iou"] == bf16["test"][a]["fg_iou"]


def test_bf16_on_a_cpu_without_native_bf16_trains_in_fp32_with_the_note(
    tiny_backbone_dir, datasets, tmp_path, on_cpu, caplog
):
    a, _ = datasets
    hw = on_cpu("avx2", "avx512f")
    out = tmp_path / "no-bf16"
    m = train_run(config(tiny_backbone_dir, a, tmp_path, precision="bf16", epochs=1), out, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["run"]["precision"] == "32" and saved["run"]["precision_requested"] == "bf16"
    assert CPU_NO_BF16_NOTE in saved["warnings"] and saved["warnings"] == m["warnings"]
    assert saved["hardware"]["cpu"]["flags"] == hw["cpu"]["flags"]
    assert CPU_NO_BF16_NOTE in caplog.text
    # trained in fp32: the same run asked for fp32 gives the same numbers
    same = train_run(config(tiny_backbone_dir, a, tmp_path, epochs=1), tmp_path / "fp32", progress=False)
    assert same["train"] == m["train"] and same["test"][a]["fg_iou"] == m["test"][a]["fg_iou"]
