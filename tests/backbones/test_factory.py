"""create_backbone: local directories, the hub cache (offline), errors, LoRA, dtypes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from emfm.backbones import create_backbone, is_cached
from emfm.backbones._testing import write_random_checkpoint
from emfm.errors import (
    CheckpointFormatError,
    ConfigError,
    DataError,
    GatedWeightsError,
    UnknownNameError,
    WeightsNotFoundError,
)

FAMILIES = ["dinov2", "dinov2_reg", "dinov3", "openclip"]
MODEL_CLASS = {
    "dinov2": "Dinov2Model",
    "dinov2_reg": "Dinov2WithRegistersModel",
    "dinov3": "DINOv3ViTModel",
    "openclip": "CLIPVisionModel",
}


def _encode_non_square(backbone):
    """An image 3 x 5 patches, where the checkpoint's table is 4 x 4 (DINOv3: RoPE, any size)."""
    p = backbone.patch_size
    with torch.no_grad():
        out = backbone.encode(torch.randn(2, 3, 3 * p, 5 * p), layers=[0, -1])
    assert out.patch_grid.shape == (2, backbone.embed_dim, 3, 5)
    assert out.cls.shape == (2, backbone.embed_dim)
    assert set(out.layers) == {0, -1}
    assert torch.allclose(out.layers[-1], out.patch_grid, atol=1e-5)
    assert not torch.allclose(out.layers[0], out.patch_grid)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_local_directory(tmp_path, family):
    directory = write_random_checkpoint(family, tmp_path / "tiny-model", hidden_size=32, num_heads=2)
    backbone = create_backbone(str(directory))
    assert backbone.name == "tiny-model"
    assert backbone.family == family
    assert type(backbone.model).__name__ == MODEL_CLASS[family]
    assert not backbone.training and not backbone.model.training
    assert str(directory) in backbone.source
    assert backbone.weights_id == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    _encode_non_square(backbone)


@pytest.mark.parametrize("family", FAMILIES)
def test_hub_id_through_the_offline_cache(tmp_path, offline, add_to_hub_cache, family):
    files = write_random_checkpoint(family, tmp_path / "files")
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, f"someone/tiny-{family}", files)
    assert is_cached(f"someone/tiny-{family}", cache_dir=str(cache))
    backbone = create_backbone(f"someone/tiny-{family}", cache_dir=str(cache))
    assert backbone.name == f"someone/tiny-{family}" and backbone.family == family
    assert "hub someone/tiny-" in backbone.source
    # the blob's name is its sha256: the digest is read, not recomputed, and is the file's own
    assert backbone.weights_id == hashlib.sha256((files / "model.safetensors").read_bytes()).hexdigest()
    _encode_non_square(backbone)


def test_registered_name_through_the_offline_cache(tmp_path, offline, monkeypatch, add_to_hub_cache):
    """A registered name loads the hub id of its record, under the registered name."""
    files = write_random_checkpoint("dinov2_reg", tmp_path / "files")
    cache = tmp_path / "hub"
    assert not is_cached("dinov2-reg-s", cache_dir=str(cache))
    add_to_hub_cache(cache, "facebook/dinov2-with-registers-small", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert is_cached("dinov2-reg-s")
    backbone = create_backbone("dinov2-reg-s")
    assert backbone.name == "dinov2-reg-s" and backbone.family == "dinov2_reg"
    assert backbone.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_full_clip_checkpoint_keeps_its_projection(tmp_path, offline, add_to_hub_cache):
    """Hub OpenCLIP repositories hold a whole CLIPModel (model_type clip): the vision tower and projection load."""
    import transformers

    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=50),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14, hidden_act="gelu"),
        projection_dim=8,
    )
    transformers.CLIPModel(config).save_pretrained(tmp_path / "files")
    add_to_hub_cache(tmp_path / "hub", "laion/tiny-clip", tmp_path / "files")
    backbone = create_backbone("laion/tiny-clip", cache_dir=str(tmp_path / "hub"))
    assert backbone.family == "openclip" and backbone.embed_dim == 32
    pixels = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        embedding = backbone.embed_image(pixels)
        expected = backbone.projection(backbone.encode(pixels).cls)
    assert embedding.shape == (1, 8) and torch.equal(embedding, expected)


def test_openclip_patch_grid_is_ln_post_of_every_token(tmp_path):
    backbone = create_backbone(str(write_random_checkpoint("openclip", tmp_path)))
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        hidden = backbone.model(pixel_values=pixels).last_hidden_state
        out = backbone.encode(pixels)
    ln_post = backbone.model.post_layernorm(hidden)
    assert torch.allclose(out.patch_grid.flatten(2).transpose(1, 2), ln_post[:, 1:], atol=1e-6)
    assert not torch.allclose(out.patch_grid.flatten(2).transpose(1, 2), hidden[:, 1:], atol=1e-3)


def test_missing_weights_offline_is_one_actionable_line(tmp_path, offline):
    with pytest.raises(
        WeightsNotFoundError,
        match=r"'dinov2-l' \(hub id facebook/dinov2-large\) are not in the Hugging Face cache "
        r".*hub.*HF_HUB_OFFLINE.*pass a local model directory",
    ) as err:
        create_backbone("dinov2-l", cache_dir=str(tmp_path / "hub"))
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="hub id 'nobody/nothing'.*not in the Hugging Face cache"):
        create_backbone("nobody/nothing", cache_dir=str(tmp_path / "hub"))


def test_gated_dinov3_has_its_own_message(tmp_path, offline):
    with pytest.raises(
        GatedWeightsError,
        match=r"'dinov3-l' \(hub id facebook/dinov3-vitl16-pretrain-lvd1689m\) are gated"
        r".*accept the licence on https://huggingface.co/facebook/dinov3-vitl16-pretrain-lvd1689m"
        r".*hf auth login.*dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth.*local path",
    ):
        create_backbone("dinov3-l", cache_dir=str(tmp_path / "hub"))


def test_hub_errors_are_translated_when_online(tmp_path, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    response = httpx2.Response(403, request=httpx2.Request("GET", "https://huggingface.co/x"))

    def gated(*args, **kwargs):
        raise errors.GatedRepoError("access to this model is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(GatedWeightsError, match="the hub refused access .*hf auth login"):
        create_backbone("dinov3-s", cache_dir=str(tmp_path))

    def unreachable(*args, **kwargs):
        raise errors.LocalEntryNotFoundError("cannot reach the hub and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsNotFoundError, match="the hub could not be reached"):
        create_backbone("openclip-l14", cache_dir=str(tmp_path))

    def missing_repo(*args, **kwargs):
        raise errors.RepositoryNotFoundError("404", response=httpx2.Response(404, request=response.request))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing_repo)
    with pytest.raises(WeightsNotFoundError, match="no such repository on the Hugging Face hub"):
        create_backbone("nobody/nothing", cache_dir=str(tmp_path))


def test_unknown_name_suggests_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'dinov2-lg'\. Did you mean 'dinov2-l', 'dinov2-g'"):
        create_backbone("dinov2-lg")
    with pytest.raises(KeyError):  # an UnknownNameError is a KeyError too
        create_backbone("openclip-l16")
    with pytest.raises(WeightsNotFoundError, match="no file or directory at"):
        create_backbone("./no/such/dir")


def test_image_side_not_a_multiple_of_the_patch(tmp_path):
    backbone = create_backbone(str(write_random_checkpoint("dinov2", tmp_path / "m")))
    with pytest.raises(
        DataError,
        match=r"image size 57x70 is not a multiple of the patch size 14 of backbone 'm' "
        r"\(height 57 -> nearest valid 56 or 70\)",
    ):
        backbone.encode(torch.zeros(1, 3, 57, 70))
    with pytest.raises(DataError, match=r"width 20 -> nearest valid 14 or 28"):
        backbone.encode(torch.zeros(1, 3, 28, 20))
    with pytest.raises(DataError, match=r"expects pixels shaped \(B, 3, H, W\), got \(1, 1, 28, 28\)"):
        backbone.encode(torch.zeros(1, 1, 28, 28))
    with pytest.raises(DataError, match="expects float pixels"):
        backbone.encode(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="layer 2 does not exist in backbone 'm', which has 2 blocks"):
        backbone.encode(torch.zeros(1, 3, 28, 28), layers=[2])


def test_checkpoint_whose_keys_fit_no_family(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, tmp_path / "mystery.pth")
    with pytest.raises(
        CheckpointFormatError,
        match=r"keys of .*mystery.pth fit no known backbone format \(first keys: encoder.weight, head.bias\)"
        r".*dinov2: .*dinov3: .*openclip: ",
    ):
        create_backbone(str(tmp_path / "mystery.pth"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointFormatError, match="not a checkpoint file"):
        create_backbone(str(tmp_path / "notes.txt"))
    torch.save({"weights": [1, 2, 3]}, tmp_path / "training_state.pt")
    with pytest.raises(CheckpointFormatError, match="does not hold a flat state dict of tensors"):
        create_backbone(str(tmp_path / "training_state.pt"))


def test_unsupported_transformers_model_type(tmp_path):
    directory = write_random_checkpoint("dinov2", tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "vit"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointFormatError, match=r"model of type 'vit'; emfm loads dinov2, dinov2_with_registers, dinov3_vit, clip"
    ):
        create_backbone(str(directory))


def test_overrides_and_settings(tmp_path):
    directory = write_random_checkpoint("dinov2", tmp_path / "m")
    backbone = create_backbone(str(directory), drop_path_rate=0.1)
    assert backbone.model.config.drop_path_rate == 0.1
    assert backbone.weights_id != create_backbone(str(directory)).weights_id  # settings are part of the key
    with pytest.raises(ConfigError, match="unknown backbone setting not_a_setting=1"):
        create_backbone(str(directory), not_a_setting=1)
    with pytest.raises(ConfigError, match="num_heads=4 contradicts .*config.json, which has 2 attention heads"):
        create_backbone(str(directory), num_heads=4)
    with pytest.raises(ConfigError, match="revision='v1' applies to hub ids"):
        create_backbone(str(directory), revision="v1")


def test_float16_weights_are_upcast(tmp_path):
    import transformers

    model = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1,
                                                               num_attention_heads=2, image_size=56))
    model.half().save_pretrained(tmp_path / "half")
    backbone = create_backbone(str(tmp_path / "half"))
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}
    assert "stored as float16, upcast to float32" in backbone.source


def test_encode_keeps_working_after_lora_injection(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model

    for family in FAMILIES:
        backbone = create_backbone(str(write_random_checkpoint(family, tmp_path / family)))
        pixels = torch.randn(1, 3, 2 * backbone.patch_size, 3 * backbone.patch_size)
        with torch.no_grad():
            before = backbone.encode(pixels, layers=[0])
        config = LoraConfig(r=2, lora_alpha=4, target_modules=backbone.lora_target_modules)
        inject_adapter_in_model(config, backbone.model)
        lora = {n for n, _ in backbone.model.named_parameters() if "lora_" in n}
        adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
        assert adapted == set(backbone.lora_target_modules)  # attention only, never the MLP
        with torch.no_grad():
            after = backbone.encode(pixels, layers=[0])
            assert torch.allclose(after.patch_grid, before.patch_grid, atol=1e-6)  # B starts at zero
            for name, param in backbone.model.named_parameters():
                if "lora_B" in name:
                    param.normal_()
            changed = backbone.encode(pixels, layers=[0])
        assert not torch.allclose(changed.patch_grid, before.patch_grid, atol=1e-4)
        assert changed.layers[0].shape == before.layers[0].shape


def test_gradients_flow_through_encode(tmp_path):
    backbone = create_backbone(str(write_random_checkpoint("dinov3", tmp_path)))
    out = backbone.encode(torch.randn(1, 3, 32, 48))
    out.patch_grid.sum().backward()
    assert backbone.model.model.layer[0].attention.q_proj.weight.grad is not None


def test_random_checkpoint_is_fast_seeded_and_leaves_the_global_rng(tmp_path):
    import time

    import emfm.backbones._testing as testing

    assert "random" in testing.write_random_checkpoint.__doc__.lower()
    assert "tests only" in testing.write_random_checkpoint.__doc__
    write_random_checkpoint("dinov2", tmp_path / "warm")  # first call pays transformers' lazy imports
    state = torch.random.get_rng_state()
    started = time.perf_counter()
    a = write_random_checkpoint("dinov3", tmp_path / "a", seed=1)
    assert time.perf_counter() - started < 1.0
    b = write_random_checkpoint("dinov3", tmp_path / "b", seed=1)
    c = write_random_checkpoint("dinov3", tmp_path / "c", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    digest = lambda d: hashlib.sha256((Path(d) / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(a) == digest(b) != digest(c)
