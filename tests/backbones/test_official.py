"""Official release formats: the converted transformers models reproduce the official code's outputs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emfm.backbones import create_backbone
from emfm.backbones.dinov2 import official_position_embeddings
from emfm.errors import CheckpointFormatError, ConfigError

TOL = 1e-5


def _load(official_dir: Path, name: str):
    folder = official_dir / name
    pixels = torch.from_numpy(np.load(folder / "input.npy"))
    expected = dict(np.load(folder / "expected.npz"))
    return folder, pixels, expected


def _tokens(grid: torch.Tensor) -> np.ndarray:
    return grid.flatten(2).transpose(1, 2).numpy()


@pytest.mark.parametrize(
    ("name", "family", "checkpoint"),
    [
        ("dinov2", "dinov2", "dinov2_vit_tiny14_pretrain.pth"),
        ("dinov2_reg", "dinov2_reg", "dinov2_vit_tiny14_reg4_pretrain.pth"),
        ("dinov2_swiglu", "dinov2", "dinov2_vit_tiny14_swiglu_pretrain.pth"),
    ],
)
def test_dinov2_official_outputs_reproduced(official_dir, name, family, checkpoint):
    folder, pixels, expected = _load(official_dir, name)
    backbone = create_backbone(str(folder / checkpoint), num_heads=3)
    assert backbone.family == family
    assert backbone.num_register_tokens == (4 if family == "dinov2_reg" else 0)
    with torch.no_grad():
        out = backbone.encode(pixels, layers=[-1])
    assert tuple(out.patch_grid.shape[-2:]) == tuple(expected["patch_grid"])  # 4 x 5, not square, not 37 x 37
    assert np.abs(_tokens(out.patch_grid) - expected["x_norm_patchtokens"]).max() < TOL
    assert np.abs(out.cls.numpy() - expected["x_norm_clstoken"]).max() < TOL
    assert torch.equal(out.layers[-1], out.patch_grid)


def test_dinov3_official_outputs_reproduced(official_dir):
    folder, pixels, expected = _load(official_dir, "dinov3")
    backbone = create_backbone(str(folder / "dinov3_vit_tiny16_pretrain.pth"))  # heads from the rope periods
    assert (
        backbone.family, backbone.num_register_tokens, backbone.model.config.num_attention_heads
    ) == ("dinov3", 4, 4)
    config = backbone.model.config
    assert config.key_bias is False and config.layer_norm_eps == 1e-5 and config.rope_theta == pytest.approx(100)
    with torch.no_grad():
        out = backbone.encode(pixels)
    assert np.abs(_tokens(out.patch_grid) - expected["x_norm_patchtokens"]).max() < TOL
    assert np.abs(out.cls.numpy() - expected["x_norm_clstoken"]).max() < TOL


def test_dinov3_key_bias_is_masked_out(official_dir):
    """The file's key bias is random and non-zero, yet the official forward multiplies it by zero."""
    state = torch.load(official_dir / "dinov3" / "dinov3_vit_tiny16_pretrain.pth", weights_only=True)
    assert state["blocks.0.attn.qkv.bias"][64:128].abs().max() > 0
    backbone = create_backbone(str(official_dir / "dinov3" / "dinov3_vit_tiny16_pretrain.pth"))
    assert backbone.model.model.layer[0].attention.k_proj.bias is None


@pytest.mark.parametrize("weights", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_openclip_official_outputs_reproduced(official_dir, weights):
    folder, pixels, expected = _load(official_dir, "openclip")
    backbone = create_backbone(str(folder / weights))
    assert backbone.name == "openclip" and backbone.family == "openclip"
    assert backbone.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    with torch.no_grad():
        out = backbone.encode(pixels)
        pooled = backbone.embed_image(pixels)
    assert np.abs(_tokens(out.patch_grid) - expected["tokens"]).max() < TOL
    assert np.abs(out.cls.numpy() - expected["pooled_pre_proj"]).max() < TOL
    assert np.abs(pooled.numpy() - expected["pooled"]).max() < TOL


def test_official_directories_load_and_encode_other_sizes(official_dir):
    """A directory holding one release file loads as that file; non-square sizes other than the fixture's work."""
    for name, patch in (("dinov2", 14), ("dinov2_reg", 14), ("dinov3", 16), ("openclip", 14)):
        kwargs = {"num_heads": 3} if name.startswith("dinov2") else {}
        backbone = create_backbone(str(official_dir / name), **kwargs)
        with torch.no_grad():
            out = backbone.encode(torch.randn(1, 3, 3 * patch, 7 * patch), layers=[0])
        assert out.patch_grid.shape == (1, backbone.embed_dim, 3, 7)
        assert out.layers[0].shape == (1, backbone.embed_dim, 3, 7)
        assert torch.isfinite(out.patch_grid).all()


def test_plain_dinov2_interpolation_is_the_official_one_not_transformers(official_dir):
    """transformers resizes to the output size; official plain DINOv2 by scale factor (grid + 0.1) / 37."""
    folder, pixels, expected = _load(official_dir, "dinov2")
    backbone = create_backbone(str(folder / "dinov2_vit_tiny14_pretrain.pth"), num_heads=3)
    embeddings = backbone.model.embeddings
    del embeddings.interpolate_pos_encoding  # back to transformers' own method
    with torch.no_grad():
        transformers_err = np.abs(_tokens(backbone.encode(pixels).patch_grid) - expected["x_norm_patchtokens"]).max()
    assert transformers_err > 1e-2
    table = embeddings.position_embeddings
    assert torch.equal(official_position_embeddings(table, 37, 37, offset=0.1, antialias=False), table)
    resized = official_position_embeddings(table, 4, 5, offset=0.1, antialias=False)
    assert resized.shape == (1, 21, 48)


def test_release_name_gives_heads_and_is_logged(official_dir, tmp_path, caplog):
    """A file named like the ViT-S release but of another width is refused; a matching one is trusted, loudly."""
    source = official_dir / "dinov2" / "dinov2_vit_tiny14_pretrain.pth"
    renamed = tmp_path / "dinov2_vits14_pretrain.pth"
    shutil.copyfile(source, renamed)
    with pytest.raises(
        CheckpointFormatError, match=r"named like the DINOv2 ViT-S/14 release \(width 384\).*width 48.*num_heads="
    ):
        create_backbone(str(renamed))

    from emfm.backbones._convert_dinov2 import infer_num_heads

    with caplog.at_level(logging.INFO, logger="emfm.backbones._convert_dinov2"):
        assert infer_num_heads(Path("dinov2_vitg14_reg4_pretrain.pth"), 1536, None) == 24
    assert "24 attention heads, read from the official release name" in caplog.text


def test_unknown_dinov2_name_requires_num_heads(official_dir):
    with pytest.raises(
        CheckpointFormatError,
        match=r"dinov2_vit_tiny14_pretrain.pth is not an official DINOv2 release name.*pass num_heads=",
    ):
        create_backbone(str(official_dir / "dinov2" / "dinov2_vit_tiny14_pretrain.pth"))
    with pytest.raises(ConfigError, match="num_heads=5 does not divide the width 48"):
        create_backbone(str(official_dir / "dinov2" / "dinov2_vit_tiny14_pretrain.pth"), num_heads=5)


def test_settings_that_contradict_the_file_are_refused(official_dir):
    with pytest.raises(ConfigError, match="num_heads=2 contradicts .*rope periods give 4 heads"):
        create_backbone(str(official_dir / "dinov3"), num_heads=2)
    with pytest.raises(ConfigError, match="num_heads=4 contradicts open_clip_config.json, which gives 2 heads"):
        create_backbone(str(official_dir / "openclip"), num_heads=4)


def test_openclip_weights_without_their_config_are_refused(official_dir, tmp_path):
    shutil.copyfile(official_dir / "openclip" / "open_clip_model.safetensors", tmp_path / "open_clip_model.safetensors")
    with pytest.raises(CheckpointFormatError, match="no open_clip_config.json lies beside it"):
        create_backbone(str(tmp_path / "open_clip_model.safetensors"))


def test_weights_id_is_the_file_digest_plus_given_settings(official_dir):
    import json

    meta = json.loads((official_dir / "dinov3" / "fixture.json").read_text())
    assert create_backbone(str(official_dir / "dinov3")).weights_id == meta["checkpoint_sha256"]
    with_heads = create_backbone(str(official_dir / "dinov2"), num_heads=3).weights_id
    assert with_heads == create_backbone(str(official_dir / "dinov2"), num_heads=3).weights_id
    assert with_heads != json.loads((official_dir / "dinov2" / "fixture.json").read_text())["checkpoint_sha256"]
