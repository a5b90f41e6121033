"""The feature cache: reused across calls, keyed by everything that changes features, self-checking."""

import numpy as np
import pytest
import torch

from emfm.backbones._base import Backbone, BackboneOutput
from emfm.data._stack import SliceStack
from emfm.features import FeatureCache, encode_stack


class CountingBackbone(Backbone):
    """A deterministic stand-in that counts how often it runs (the cache's subject here)."""

    def __init__(self, weights_id: str = "w1") -> None:
        super().__init__()
        self.name, self.family, self.patch_size, self.embed_dim, self.num_layers = "counting", "test", 14, 4, 1
        self.mean, self.std, self.weights_id, self.lora_target_modules = (0.5,) * 3, (0.5,) * 3, weights_id, []
        self.model = torch.nn.Conv2d(3, 4, 14, stride=14)
        self.calls = 0

    def encode(self, pixels, layers=None):
        self.calls += 1
        grid = self.model(pixels)
        return BackboneOutput(grid, grid.mean((2, 3)), {j: grid * 2 for j in (layers or [])})


def stack(n=3, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [rng.integers(0, 255, (28, 42), dtype=np.uint8) for _ in range(n)]
    return SliceStack("toy", "train", [f"{i:02d}" for i in range(n)], imgs, [np.zeros((28, 42), np.uint8)] * n)


def test_second_pass_reads_the_cache_and_never_calls_the_backbone(tmp_path):
    torch.manual_seed(0)
    bb, cache, st = CountingBackbone(), FeatureCache(tmp_path), stack()
    first = encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    assert (bb.calls, first.n_computed, first.n_cached) == (1, 3, 0)  # three slices of one size: one batch
    again = encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    assert (bb.calls, again.n_computed, again.n_cached) == (1, 0, 3)
    assert all(torch.equal(a, b) for a, b in zip(first.grids, again.grids))
    assert first.grids[0].shape == (4, 2, 3)


def test_key_changes_with_resolution_weights_and_normalisation(tmp_path):
    bb, cache, st = CountingBackbone(), FeatureCache(tmp_path), stack(1)
    encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    encode_stack(bb, st, resolution=28, cache=cache, progress=False)
    encode_stack(bb, st, resolution=42, cache=cache, mean=(0.4,) * 3, progress=False)
    encode_stack(CountingBackbone("w2"), st, resolution=42, cache=cache, progress=False)
    assert bb.calls == 3 and len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_missing_layers_are_computed_and_the_entry_grows(tmp_path):
    bb, cache, st = CountingBackbone(), FeatureCache(tmp_path), stack(1)
    encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    f = encode_stack(bb, st, resolution=42, cache=cache, layers=[0], progress=False)
    assert bb.calls == 2 and torch.equal(f.layers[0][0], f.grids[0] * 2)
    encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    assert bb.calls == 2


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_entries_are_rebuilt_not_used(tmp_path, damage, caplog):
    bb, cache, st = CountingBackbone(), FeatureCache(tmp_path), stack(1)
    good = encode_stack(bb, st, resolution=42, cache=cache, progress=False).grids[0]
    (path,) = tmp_path.rglob("*.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-3] ^= 0xFF  # a flipped bit in the tensor payload
        path.write_bytes(bytes(data))
    again = encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    assert bb.calls == 2 and torch.equal(again.grids[0], good)
    assert "recomputing" in caplog.text


def test_entries_keep_earlier_layers_and_load_only_what_is_asked(tmp_path):
    bb, cache, st = CountingBackbone(), FeatureCache(tmp_path), stack(1)
    encode_stack(bb, st, resolution=42, cache=cache, layers=[0], progress=False)
    encode_stack(bb, st, resolution=42, cache=cache, layers=[1], progress=False)
    (path,) = tmp_path.rglob("*.safetensors")
    key = path.stem
    assert cache.names(key) == {"grid", "cls", "layer_0", "layer_1"}
    assert set(cache.load(key, ["grid"])) == {"grid"}
    assert cache.load(key, ["layer_7"]) is None
    f = encode_stack(bb, st, resolution=42, cache=cache, layers=[0, 1], progress=False)
    assert bb.calls == 2 and f.n_cached == 1


def test_key_changes_with_the_backbone_config_and_the_feature_code(tmp_path, tiny_backbone_dir, monkeypatch):
    """Same weights, another architecture config, or an edit of the code that prepares and encodes a slice:
    new entries, never the stale ones."""
    import emfm.features as features
    from emfm.backbones import create_backbone
    from emfm.transforms import Preprocessing

    backbone = create_backbone(str(tiny_backbone_dir))
    prep = Preprocessing(28, backbone.patch_size)
    base = features.feature_spec(backbone, prep)
    assert base.config_id not in ("", "none") and base.code_id == features.feature_code_id() != ""
    backbone.model.config.layer_norm_eps = 1e-3
    changed_config = features.feature_spec(backbone, prep)
    assert changed_config.weights_id == base.weights_id and changed_config.key("img") != base.key("img")
    monkeypatch.setattr(features, "feature_code_id", lambda: "edited")
    assert features.feature_spec(backbone, prep).key("img") not in (base.key("img"), changed_config.key("img"))
    # where the config came from is not part of it
    backbone.model.config._name_or_path = "/somewhere/else"
    assert features.feature_spec(backbone, prep).config_id == changed_config.config_id


class DtypeRecordingBackbone(CountingBackbone):
    """Records the dtype its convolution computed in: bf16 under a bf16 autocast, fp32 outside one."""

    def encode(self, pixels, layers=None):
        out = super().encode(pixels, layers)
        self.dtypes = getattr(self, "dtypes", []) + [out.patch_grid.dtype]
        return out


def test_fp32_keys_are_unchanged_by_the_precision_field_and_bf16_gets_its_own():
    import hashlib
    import json
    from dataclasses import asdict

    from emfm.features import feature_spec
    from emfm.transforms import Preprocessing

    bb, prep = CountingBackbone(), Preprocessing(42, 14)
    fp32, bf16 = feature_spec(bb, prep), feature_spec(bb, prep, precision="bf16")
    before = {k: v for k, v in asdict(fp32).items() if k not in ("precision", "tiling", "variant")}
    blob = json.dumps({**before, "image": "img"}, sort_keys=True).encode()
    assert fp32.key("img") == hashlib.sha256(blob).hexdigest()  # the key fp32 entries had before the field
    assert bf16.key("img") != fp32.key("img") != feature_spec(bb, prep, precision="16").key("img")


def test_a_bf16_encode_runs_under_autocast_into_entries_of_its_own(tmp_path):
    torch.manual_seed(0)
    bb, cache, st = DtypeRecordingBackbone(), FeatureCache(tmp_path), stack()
    fp32 = encode_stack(bb, st, resolution=42, cache=cache, progress=False)
    bf16 = encode_stack(bb, st, resolution=42, cache=cache, precision="bf16", progress=False)
    assert bb.dtypes == [torch.float32, torch.bfloat16] and len(list(tmp_path.rglob("*.safetensors"))) == 6
    assert all(g.dtype == torch.float32 for g in bf16.grids)  # stored as fp32, whatever computed them
    for a, b in zip(fp32.grids, bf16.grids):
        assert not torch.equal(a, b) and torch.allclose(a, b, rtol=2e-2, atol=2e-2 * a.abs().max().item())
    again = encode_stack(bb, st, resolution=42, cache=cache, precision="bf16", progress=False)
    assert bb.calls == 2 and again.n_cached == 3 and all(torch.equal(a, b) for a, b in zip(bf16.grids, again.grids))
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on


@pytest.mark.parametrize("bad", ["auto", "fp32", "bf"])
def test_an_unresolved_precision_is_refused_before_any_encoding(tmp_path, bad):
    from emfm.errors import ConfigError

    bb = CountingBackbone()
    with pytest.raises(ConfigError, match="resolved precision"):
        encode_stack(bb, stack(1), resolution=42, cache=FeatureCache(tmp_path), precision=bad, progress=False)
    assert bb.calls == 0 and not list(tmp_path.rglob("*.safetensors"))
