"""The one real pretrained checkpoint here: a transformers Dinov2Model directory stored in float16."""

from __future__ import annotations

import pytest
import torch

from emfm.backbones import create_backbone

SHA256 = "c1325d0c23f021d27b826262bbb6440c3637302a1d136d92cf23fa569c3cc046"  # ../shared/README.md


@pytest.fixture(scope="module")
def imgfocus_dir(shared_dir):
    return shared_dir / "weights" / "dinov2-vits14-imgfocus"


def test_loads_offline_under_its_own_name(imgfocus_dir, offline):
    backbone = create_backbone(str(imgfocus_dir))
    assert backbone.name == "dinov2-vits14-imgfocus"  # never reported as "DINOv2"
    assert (backbone.family, backbone.patch_size, backbone.embed_dim, backbone.num_layers) == ("dinov2", 14, 384, 12)
    assert backbone.num_params == 22_056_576
    assert backbone.weights_id == SHA256  # the file's own sha256: a stable feature-cache key
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}


def test_518_grid_equals_transformers_own_output(imgfocus_dir):
    from transformers import Dinov2Model

    backbone = create_backbone(str(imgfocus_dir))
    reference = Dinov2Model.from_pretrained(imgfocus_dir, dtype=torch.float32).eval()
    pixels = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = backbone.encode(pixels)
        expected = reference(pixel_values=pixels).last_hidden_state  # already layernormed in HF Dinov2
    assert out.patch_grid.shape == (1, 384, 37, 37)
    grid = expected[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    assert torch.equal(out.patch_grid, grid)
    assert torch.equal(out.cls, expected[:, 0])
