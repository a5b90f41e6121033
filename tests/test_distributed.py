"""Training on several processes with Lightning's DDP: which process writes, the global batch, and one tiny run
trained on 1 process and on 2 CPU processes (gloo) giving the same metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emfm.config import TrainConfig
from emfm.distributed import is_primary, per_device_batch, process_rank
from emfm.errors import ConfigError
from tests.helpers import write_folder_dataset

RANK_VARS = ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("env", "rank"), [
    ({}, 0),
    ({"LOCAL_RANK": "1"}, 1),                                     # Lightning's second process
    ({"NODE_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}, 4),
    ({"RANK": "3", "LOCAL_RANK": "1"}, 3),                        # torchrun
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),              # srun, one task per device
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "LOCAL_RANK": "1"}, 1),  # a one-task job: Lightning's ranks
])
def test_the_rank_comes_from_whoever_started_the_process(clean_env, env, rank):
    for var, value in env.items():
        clean_env.setenv(var, value)
    assert process_rank() == rank and is_primary() == (rank == 0)


def test_the_global_batch_is_shared_evenly_or_refused():
    assert per_device_batch(8, 2, 2) == 2 and per_device_batch(2, 1, 1) == 2
    with pytest.raises(ConfigError, match="multiple of 4"):
        per_device_batch(6, 2, 2)
    with pytest.raises(ConfigError, match="global batch"):
        TrainConfig(backbone="b", train=("vnc",), batch_size=3, devices=2)
    with pytest.raises(ConfigError, match="strategy"):
        TrainConfig(backbone="b", train=("vnc",), strategy="horovod")


def _train(tmp_path, data: str, backbone, devices: int) -> dict:
    out = tmp_path / f"run{devices}"
    cmd = [sys.executable, "-m", "emfm", "train", "--backbone", str(backbone), "--train", data, "--resolution", "56",
           "--epochs", "20", "--min-steps", "0", "--patience", "50", "--batch-size", "4", "--devices", str(devices),
           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("fg IoU") == 1  # rank 0 alone scores and prints the run
    return json.loads((out / "metrics.json").read_text())


def test_two_gloo_processes_train_the_run_one_process_trains(tmp_path, tiny_backbone_dir):
    """Same global batch (4) and learning rate; DDP deals the slices out in another order, so the figures
    agree within seed noise, stated here as 0.02 IoU and 10% of the final training loss."""
    data = write_folder_dataset(tmp_path / "d", n_train=12, n_test=4, shape=(56, 56), seed=1)
    one, two = _train(tmp_path, data, tiny_backbone_dir, 1), _train(tmp_path, data, tiny_backbone_dir, 2)
    name = next(iter(one["test"]))
    assert two["test"][name]["n_slices"] == one["test"][name]["n_slices"] == 4  # the whole test set, once
    assert two["test"][name]["fg_iou"] == pytest.approx(one["test"][name]["fg_iou"], abs=0.02)
    assert two["train"][-1]["train_loss"] == pytest.approx(one["train"][-1]["train_loss"], rel=0.1)
    assert len(two["train"]) == len(one["train"]) == 20  # the same steps: the global batch is the same


def test_gradient_checkpointing_gives_lora_the_same_gradients(tiny_backbone_dir):
    from types import SimpleNamespace

    import torch

    from emfm.adapters import create_adapter
    from emfm.backbones import create_backbone
    from emfm.train.fit import enable_grad_checkpointing

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        backbone = create_backbone(str(tiny_backbone_dir))
        adapter = create_adapter("lora", {"layout": "fused-qkv"})
        adapter.prepare(backbone)
        with torch.no_grad():  # B starts at zero: give the adapters weights so their gradients are not trivial
            for name, p in backbone.named_parameters():
                if "lora_B" in name:
                    p.normal_()
        plan = SimpleNamespace(backbone=backbone, adapter=adapter)
        if checkpointing:
            assert enable_grad_checkpointing(plan) is True and backbone.model.is_gradient_checkpointing
        pixels = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
        backbone.encode(pixels).patch_grid.square().mean().backward()
        return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_gradient_checkpointing_leaves_a_frozen_run_alone(tiny_backbone_dir):
    from types import SimpleNamespace

    from emfm.adapters import create_adapter
    from emfm.backbones import create_backbone
    from emfm.train.fit import enable_grad_checkpointing

    backbone = create_backbone(str(tiny_backbone_dir))
    assert enable_grad_checkpointing(SimpleNamespace(backbone=backbone, adapter=create_adapter("frozen", {}))) is False
    assert not backbone.model.is_gradient_checkpointing


ENCODE = """
import json, sys
from emfm.backbones import create_backbone
from emfm.data import load_split
from emfm.features import FeatureCache, encode_stack
stack = load_split(sys.argv[1], "train", progress=False)
f = encode_stack(create_backbone(sys.argv[2]), stack, resolution=56, layers=[0], cache=FeatureCache(sys.argv[3]),
                 progress=False)
print(json.dumps({"computed": f.n_computed, "n": len(f.grids)}))
"""


def test_ranks_started_together_share_the_cache_and_build_the_one_a_single_process_builds(
    tmp_path, tiny_backbone_dir, monkeypatch
):
    import os

    import torch
    from safetensors.torch import load_file

    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    data = write_folder_dataset(tmp_path / "d", n_train=9, n_test=1, shape=(56, 56), seed=2)

    def start(cache: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", ENCODE, data, str(tiny_backbone_dir), cache],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, **env})

    ranks = [start(str(tmp_path / "shared"), RANK=str(r), WORLD_SIZE="2") for r in (0, 1)]
    alone = start(str(tmp_path / "alone"))
    shares = [json.loads(p.communicate(timeout=180)[0]) for p in ranks]
    single = json.loads(alone.communicate(timeout=180)[0])
    assert all(p.returncode == 0 for p in (*ranks, alone))
    n = single["n"]
    assert single["computed"] == n and sorted(s["computed"] for s in shares) == [n // 2, n - n // 2]
    assert all(s["n"] == n for s in shares)  # each rank ends with every slice's features
    files = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*.safetensors"))
    assert len(files) == n and files == sorted(
        p.relative_to(tmp_path / "shared") for p in (tmp_path / "shared").rglob("*.safetensors"))
    for rel in files:
        a, b = load_file(tmp_path / "alone" / rel), load_file(tmp_path / "shared" / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
