"""Every backbone runs PyTorch's fused attention (SDPA), whatever its saved config says, with eager's results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emfm.backbones import create_backbone
from emfm.backbones._factory import ATTENTION
from emfm.backbones._testing import write_random_checkpoint

FAMILIES = ["dinov2", "dinov2_reg", "dinov3", "openclip"]


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_backbones_load_with_sdpa(tmp_path, family):
    backbone = create_backbone(str(write_random_checkpoint(family, tmp_path / "tiny", hidden_size=32, num_heads=2)))
    assert ATTENTION == "sdpa"
    assert backbone.model.config._attn_implementation == "sdpa"


def test_a_saved_eager_config_still_loads_with_sdpa(tmp_path):
    directory = write_random_checkpoint("dinov2", tmp_path / "tiny")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "_attn_implementation": "eager"}))
    assert create_backbone(str(directory)).model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", ["dinov2", "openclip"])
def test_sdpa_gives_the_eager_features(tmp_path, family):
    backbone = create_backbone(str(write_random_checkpoint(family, tmp_path / "tiny", hidden_size=32, num_heads=2)))
    patch = backbone.patch_size
    pixels = torch.randn(2, 3, 3 * patch, 5 * patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = backbone.encode(pixels, layers=[0]).patch_grid
        backbone.model.set_attn_implementation("eager")
        eager = backbone.encode(pixels, layers=[0]).patch_grid
    assert torch.allclose(fused, eager, atol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), [("dinov2", {"num_heads": 3}), ("dinov3", {}), ("openclip", {})])
def test_converted_official_checkpoints_use_sdpa(official_dir: Path, name, kwargs):
    backbone = create_backbone(str(official_dir / name), **kwargs)
    assert backbone.model.config._attn_implementation == "sdpa"
