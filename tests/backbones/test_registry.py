"""The registered names: every name of the command-line contract, with facts consistent with each other."""

from __future__ import annotations

import pytest

from emfm.backbones import get_backbone_info, is_cached, list_backbones
from emfm.backbones._registry import IMAGENET_MEAN, OPENAI_CLIP_MEAN
from emfm.errors import UnknownNameError

CONTRACT = (
    [f"dinov2-{s}" for s in "sblg"]
    + [f"dinov2-reg-{s}" for s in "sblg"]
    + [f"dinov3-{s}" for s in ("s", "s+", "b", "l", "h+", "7b")]
    + [f"openclip-{s}" for s in ("b32", "b16", "l14", "h14")]
)


def test_every_contract_name_is_registered_once():
    names = [record.name for record in list_backbones()]
    assert sorted(names) == sorted(CONTRACT)


def test_records_are_consistent():
    for record in list_backbones():
        assert record.embed_dim % record.num_heads == 0
        assert record.image_size % record.patch_size == 0
        assert record.num_params > 0 and record.paper and record.license
        assert set(record.lora_target_modules) & {"fc1", "fc2", "up_proj", "down_proj", "gate_proj"} == set()
        expected_mean = OPENAI_CLIP_MEAN if record.family == "openclip" else IMAGENET_MEAN
        assert record.mean == expected_mean
        assert record.gated == (record.family == "dinov3")


def test_the_study_checkpoints():
    l14 = get_backbone_info("openclip-l14")
    assert l14.hub_id == "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"
    assert (l14.patch_size, l14.embed_dim, l14.depth, l14.lora_target_modules[-1]) == (14, 1024, 24, "out_proj")
    reg_l = get_backbone_info("dinov2-reg-l")
    assert (reg_l.hub_id, reg_l.num_register_tokens) == ("facebook/dinov2-with-registers-large", 4)
    v3 = get_backbone_info("dinov3-l")
    assert (v3.hub_id, v3.patch_size, v3.num_register_tokens) == ("facebook/dinov3-vitl16-pretrain-lvd1689m", 16, 4)
    assert get_backbone_info("dinov3-7b").num_params == 6_716_035_072
    assert get_backbone_info("dinov2-s").num_params == 22_056_576


def test_unknown_name_and_uncached(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'dinov3-s'"):
        get_backbone_info("dinov3-ss")
    assert not is_cached("dinov2-s", cache_dir=str(tmp_path))
