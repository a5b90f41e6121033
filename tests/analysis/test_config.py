"""AnalysisConfig: the defaults run_analysis had, one-line errors naming the setting, YAML round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emfm.analysis import AnalysisConfig
from emfm.errors import ConfigError

TWO = ["lucchi_pp", "vnc"]


def test_defaults_are_the_analysis_protocol():
    c = AnalysisConfig(datasets=TWO)
    assert c.datasets == ("lucchi_pp", "vnc") and c.backbone is None and c.layers is None and c.wants_probe
    assert (c.resolution, c.embedding, c.n_boot, c.seed, c.baseline_repeats, c.level) == (518, "mean", 200, 0, 50, 0.95)
    assert (c.bootstrap_method, c.pca_components, c.probe_components) == ("percentile", 32, 64)
    assert (c.crop_size, c.crops_per_image, c.probe_patches, c.rgb_patches) == (8, 64, 20_000, 20_000)
    assert (c.normalisation, c.intensity, c.chunk_size) == ("imagenet", "dtype", 8)
    assert c.use_cache is True and c.max_images is None and c.precision == "32"
    assert AnalysisConfig(datasets=TWO, precision=32).precision == "32"  # as YAML reads it


def test_values_are_normalised():
    c = AnalysisConfig(datasets="lucchi_pp, vnc", layers=[3, -1], cache_dir=Path("/tmp/c"), level="9e-1")
    assert c.datasets == ("lucchi_pp", "vnc") and c.layers == (3, -1) and c.cache_dir == "/tmp/c" and c.level == 0.9
    assert AnalysisConfig(datasets=TWO, layers=5).layers == (5,)
    assert not AnalysisConfig(datasets=TWO, layers=[]).wants_probe


def test_round_trips_through_dict_and_yaml(tmp_path):
    c = AnalysisConfig(datasets=TWO, backbone="dinov2-s", layers=[2, 5], n_boot=10, data_root="/data")
    assert AnalysisConfig.from_dict(c.to_dict()) == c
    (tmp_path / "c.yaml").write_text(c.to_yaml())
    assert AnalysisConfig.from_yaml(tmp_path / "c.yaml") == c
    changed = AnalysisConfig.from_yaml(tmp_path / "c.yaml", ["n_boot=20", "layers=null"])
    assert changed == c.replace(n_boot=20, layers=None)
    assert AnalysisConfig.from_dict(AnalysisConfig(datasets=TWO).to_dict()).layers is None


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError) as err:
        AnalysisConfig.from_dict({"datasets": TWO, "n_bot": 10})
    message = str(err.value)
    assert message.startswith("unknown analysis key 'n_bot' (did you mean 'n_boot'?); valid keys: ")
    assert "baseline_repeats" in message and "\n" not in message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"datasets": ["lucchi_pp"]}, "at least two"),
        ({"datasets": ["vnc", "vnc"]}, "more than once"),
        ({"datasets": 3}, "datasets must be a list"),
        ({"embedding": "max"}, "unknown embedding 'max'; use one of 'mean', 'cls'"),
        ({"normalisation": "own"}, "unknown normalisation 'own'"),
        ({"intensity": "gamma"}, "unknown intensity 'gamma'; use one of 'dtype', 'minmax'"),
        ({"bootstrap_method": "bca"}, "unknown bootstrap_method 'bca'; use one of 'percentile', 'basic', 'BCa'"),
        ({"n_boot": 1}, "n_boot must be >= 2, got 1"),
        ({"baseline_repeats": 1}, "baseline_repeats must be >= 2, got 1"),
        ({"n_boot": 2.5}, "n_boot must be an integer"),
        ({"level": 1.0}, "level must be > 0 and < 1"),
        ({"level": 0}, "level must be > 0 and < 1"),
        ({"level": "high"}, "level must be a number"),
        ({"max_images": 3}, "max_images must be >= 4, got 3"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"resolution": 0}, "resolution must be >= 1"),
        ({"pca_components": 1}, "pca_components must be >= 2"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"layers": ["a"]}, "layers (each) must be an integer"),
        ({"layers": "all"}, "layers must be null (every block), []"),
        ({"use_cache": "no"}, "use_cache must be true or false"),
        ({"backbone": 7}, "backbone must be a registry name"),
        ({"precision": "fp16"}, "unknown precision 'fp16'; use one of '32', 'bf16', 'auto'"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_setting(changes, message):
    with pytest.raises(ConfigError) as err:
        AnalysisConfig.from_dict({"datasets": TWO, **changes})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_replace_checks_again():
    with pytest.raises(ConfigError, match="n_boot must be >= 2"):
        AnalysisConfig(datasets=TWO).replace(n_boot=0)


def test_the_cli_lists_every_key():
    from emfm.cli.analyze import SETTING_KEYS

    assert set(SETTING_KEYS) == {f.name for f in dataclasses.fields(AnalysisConfig)}
