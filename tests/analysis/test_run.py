"""run_analysis end to end on two tiny synthetic folder datasets and a tiny random DINOv2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from emfm.analysis import AnalysisConfig, run_analysis
from emfm.errors import ConfigError, DataError

SHAPE = (84, 112)  # 6 x 8 patches of 14 px at resolution 112


def _slice(rng: np.random.Generator, background: float, texture: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for _ in range(3):
        cy, cx, r = rng.uniform(15, h - 15), rng.uniform(15, w - 15), rng.uniform(10, 16)
        mask |= ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    image = background + texture * np.sin(xx / 3.0) + rng.normal(0, 15, SHAPE) + 90 * mask
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write_folder(root: Path, seed: int, n_train: int, n_test: int, background: float, texture: float) -> Path:
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            image, mask = _slice(rng, background, texture)
            for kind, arr in (("images", image), ("masks", mask * 255)):
                (root / part / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / part / kind / f"s{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("data")
    a = _write_folder(base / "a", 0, 10, 3, background=80, texture=5)
    b = _write_folder(base / "b", 1, 6, 2, background=120, texture=40)
    return f"folder:{a}", f"folder:{b}"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> str:
    from emfm.backbones._testing import write_random_checkpoint

    return str(write_random_checkpoint("dinov2", tmp_path_factory.mktemp("tiny-dinov2"), image_size=112))


FAST = dict(
    resolution=112, n_boot=10, baseline_repeats=3, crop_size=2, crops_per_image=8, probe_patches=300,
    rgb_patches=200,
)


def test_writes_every_number_with_its_protocol_and_the_figures(datasets, tiny_backbone, tmp_path):
    a, b = datasets
    out = tmp_path / "out"
    config = AnalysisConfig(backbone=tiny_backbone, datasets=[a, b], cache_dir=tmp_path / "cache", **FAST)
    result = run_analysis(config, out, progress=False)
    saved = json.loads((out / "analysis.json").read_text())
    # config.yaml beside analysis.json is the config itself, and reads back as an equal one.
    assert AnalysisConfig.from_yaml(out / "config.yaml") == config
    assert yaml.safe_load((out / "config.yaml").read_text())["cache_dir"] == str(tmp_path / "cache")
    assert saved["backbone"]["name"] == result["backbone"]["name"] and saved["backbone"]["weights_id"]
    assert saved["protocol"]["resolution"] == 112 and saved["protocol"]["probe_layers"] == [0, 1]
    assert saved["datasets"][a]["n_images"] == 10 and saved["datasets"][b]["n_images"] == 6
    assert saved["datasets"][a]["patch_grids"] == [[6, 8]] and saved["datasets"][a]["input_sizes"] == [[84, 112]]
    assert saved["datasets"][a]["features"] == {"computed": 13, "from_cache": 0}
    (pair,) = saved["comparisons"]
    assert pair["datasets"] == [a, b]
    for name, fd in pair["frechet"].items():
        assert isinstance(fd["value"], float) and fd["interval"]["n_boot"] == 10, name
        assert set(fd["baselines"]) == {a, b}
    assert pair["frechet"]["full"]["singular"] is True and pair["frechet"]["full"]["dim"] == 32
    assert pair["frechet"]["pca"]["n_components"] == 2  # floor(6 / 2) - 1
    assert pair["frechet"]["crops"]["n_samples"] == {a: 80, b: 48}
    assert "value" in pair["kid"] and pair["kid"]["interval"]["level"] == 0.95
    probe = pair["domain_probe"]
    assert probe["n"] == {a: 10, b: 6} and 0 <= probe["holdout"]["roc_auc"] <= 1
    assert probe["cross_validation"]["n_folds"] == 5
    assert saved["pca"]["n_components"] == 16 and len(saved["pca"]["explained_variance_ratio"]) == 16
    mito = saved["mitochondria_probe"][a]
    assert mito["layers"] == [0, 1] and len(mito["iou"]) == 2 and mito["n_test_images"] == 3
    assert mito["n_test_patches"] == 3 * 48 and mito["train_split"] == "trainval"
    for fname in saved["figures"].values():
        with Image.open(out / fname) as im:
            assert im.format == "PNG"
    assert set(saved["figures"]) >= {"pca", "pca_rgb", "probe_layers"}
    assert saved["datasets"][a]["rgb_views"] == ["final tokens", "block 0"]

    again = run_analysis(config, None, progress=False)
    assert again["datasets"][a]["features"] == {"computed": 0, "from_cache": 13}
    assert again["comparisons"][0]["frechet"]["full"]["value"] == pytest.approx(pair["frechet"]["full"]["value"])


def test_cls_embedding_no_probe_and_max_images(datasets, tiny_backbone, tmp_path):
    a, b = datasets
    config = AnalysisConfig(
        backbone=tiny_backbone, datasets=[a, b], embedding="cls", layers=[], max_images=5, use_cache=False, **FAST
    )
    result = run_analysis(config, None, progress=False)
    assert result["mitochondria_probe"] == {} and result["protocol"]["embedding"] == "cls"
    assert result["datasets"][a]["n_images"] == 5 and result["datasets"][a]["ids"] == [
        "s000", "s002", "s004", "s007", "s009"
    ]
    assert result["datasets"][a]["n_test_images"] == 0


def test_a_created_backbone_is_used_and_named_in_config_yaml(datasets, tiny_backbone, tmp_path):
    from emfm.backbones import create_backbone

    a, b = datasets
    backbone = create_backbone(tiny_backbone)
    out = tmp_path / "out"
    config = AnalysisConfig(datasets=[a, b], layers=[], max_images=4, use_cache=False, **FAST)
    result = run_analysis(config, out, progress=False, backbone=backbone)
    assert result["backbone"]["name"] == backbone.name
    text = (out / "config.yaml").read_text()
    assert f"already created backbone, {backbone.name}" in text and yaml.safe_load(text)["backbone"] is None


def test_errors_before_any_compute(datasets, tiny_backbone, tmp_path):
    a, b = datasets
    with pytest.raises(ConfigError, match="at least two"):
        AnalysisConfig(backbone=tiny_backbone, datasets=[a], **FAST)
    with pytest.raises(ConfigError, match="more than once"):
        AnalysisConfig(backbone=tiny_backbone, datasets=[a, a], **FAST)
    with pytest.raises(ConfigError, match="no backbone"):
        run_analysis(AnalysisConfig(datasets=[a, b], **FAST), tmp_path / "none", progress=False)
    with pytest.raises(ConfigError, match="do not exist"):
        run_analysis(AnalysisConfig(backbone=tiny_backbone, datasets=[a, b], layers=[5], **FAST), None, progress=False)
    small = _write_folder(tmp_path / "small", 2, 3, 1, background=100, texture=0)
    with pytest.raises(DataError, match="has 3 images in its trainval split"):
        config = AnalysisConfig(backbone=tiny_backbone, datasets=[a, f"folder:{small}"], **FAST)
        run_analysis(config, tmp_path / "small-out", progress=False)
    assert not (tmp_path / "none").exists() and not (tmp_path / "small-out").exists()


def test_a_bf16_analysis_encodes_in_bf16_where_native_and_records_it(
    datasets, tiny_backbone, tmp_path, monkeypatch, caplog
):
    """Where the CPU has native bf16, precision bf16 encodes under bf16 autocast into cache entries of its own and
    the protocol records it; the numbers stay close to fp32's. Elsewhere it runs in fp32 and says so."""
    from emfm.hardware import CPU_FLAGS, CPU_NO_BF16_NOTE, describe_hardware

    a, b = datasets
    hw = describe_hardware()
    config = AnalysisConfig(backbone=tiny_backbone, datasets=[a, b], layers=[], max_images=4,
                            cache_dir=str(tmp_path / "cache"), **FAST)
    fp32 = run_analysis(config, None, progress=False)
    entries = set((tmp_path / "cache").rglob("*.safetensors"))
    hw["cpu"]["flags"] = {f: f in ("avx2", "avx512f", "amx_bf16", "amx_tile") for f in CPU_FLAGS}
    monkeypatch.setattr("emfm.hardware.describe_hardware", lambda: {**hw, "gpu": None})
    bf16 = run_analysis(config.replace(precision="bf16"), None, progress=False)
    assert (bf16["protocol"]["precision"], bf16["protocol"]["precision_requested"]) == ("bf16", "bf16")
    assert fp32["protocol"]["precision"] == "32"
    assert len(set((tmp_path / "cache").rglob("*.safetensors")) - entries) == len(entries)  # its own entries
    pair, pair16 = fp32["comparisons"][0], bf16["comparisons"][0]
    assert pair16["frechet"]["full"]["value"] != pair["frechet"]["full"]["value"]
    assert pair16["frechet"]["full"]["value"] == pytest.approx(pair["frechet"]["full"]["value"], rel=0.1)
    hw["cpu"]["flags"] = {f: f in ("avx2",) for f in CPU_FLAGS}
    fallback = run_analysis(config.replace(precision="bf16"), None, progress=False)
    assert fallback["protocol"]["precision"] == "32"
    assert fallback["comparisons"][0]["frechet"]["full"]["value"] == pytest.approx(pair["frechet"]["full"]["value"],
                                                                                   rel=1e-6)  # fp32's entries
    assert len(set((tmp_path / "cache").rglob("*.safetensors"))) == 2 * len(entries)  # nothing new written
    assert CPU_NO_BF16_NOTE in caplog.text
