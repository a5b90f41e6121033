"""Fixtures for adaptation: a tiny source set, a target with a deliberate intensity and texture shift, and tiny
runs trained on the source (frozen linear, frozen fusion on crops, LoRA, joint domain-bn, a from-scratch U-Net)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emfm.config import TrainConfig
from emfm.train.run import train_run
from tests.adapt.helpers import write_target
from tests.helpers import write_folder_dataset


@pytest.fixture(scope="session")
def adapt_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapt")


@pytest.fixture(scope="session")
def source_set(adapt_base) -> str:
    return write_folder_dataset(adapt_base / "source", n_train=6, n_test=2, shape=(40, 56), seed=11)


@pytest.fixture
def target_dir(tmp_path) -> Path:
    """A fresh target folder (images and masks) per test, so a test may corrupt or delete its masks."""
    return write_target(tmp_path / "target", n=4, shape=(40, 56), seed=5)


def _train(backbone, source, base: Path, name: str, **kw) -> Path:
    config = {"backbone": str(backbone), "train": [source], "test": [source], "cache_dir": str(base / "cache"),
              "epochs": 2, "resolution": 56, "lr": 1e-3, "min_steps": 0, "batch_size": 2, **kw}
    out = base / "runs" / name
    train_run(TrainConfig.from_dict(config), out, progress=False)
    return out


@pytest.fixture(scope="session")
def linear_run(tiny_backbone_dir, source_set, adapt_base) -> Path:
    return _train(tiny_backbone_dir, source_set, adapt_base, "linear")


@pytest.fixture(scope="session")
def fusion_run(tiny_backbone_dir, source_set, adapt_base) -> Path:
    return _train(tiny_backbone_dir, source_set, adapt_base, "fusion", head="fusion", layers=[0, 1], crop=28,
                  crops_per_epoch=4, intensity_augment=True)


@pytest.fixture(scope="session")
def lora_run(tiny_backbone_dir, source_set, adapt_base) -> Path:
    return _train(tiny_backbone_dir, source_set, adapt_base, "lora", adapter="lora", epochs=1,
                  adapter_settings={"rank": 2})


@pytest.fixture(scope="session")
def dbn_run(tiny_backbone_dir, source_set, datasets, adapt_base) -> Path:
    other, _ = datasets
    return _train(tiny_backbone_dir, source_set, adapt_base, "dbn", train=[source_set, other], test=[source_set],
                  align="domain-bn")


@pytest.fixture(scope="session")
def unet_run(source_set, adapt_base) -> Path:
    return _train("unet-small", source_set, adapt_base, "unet", epochs=1, lr=None)


@pytest.fixture(scope="session")
def volnorm_run(tiny_backbone_dir, source_set, adapt_base) -> Path:
    return _train(tiny_backbone_dir, source_set, adapt_base, "volnorm", align="volume-norm", epochs=1)
