"""What an export refuses, and why, each in one line with nothing left behind; and the pieces an export is
built from, checked on their own (no tracing, so these run in seconds)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from emfm.errors import CheckpointFormatError, ConfigError, RunDirError
from emfm.export import export_run
from emfm.models.checkpoint import CHECKPOINT_NAME, read_info

# -- bad input: one line each, nothing written ----------------------------------------------------------


def test_a_run_without_checkpoint_is_refused(runs, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(runs["frozen"], broken)
    (broken / CHECKPOINT_NAME).unlink()
    with pytest.raises(RunDirError, match="has no checkpoint.safetensors"):
        export_run(broken, tmp_path / "m.zip", license="MIT")
    with pytest.raises(RunDirError, match="does not exist"):
        export_run(tmp_path / "nowhere", tmp_path / "m.onnx", "onnx", license="MIT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_checkpoint_that_does_not_match_its_backbone_is_refused(runs, tmp_path):
    from emfm.backbones._testing import write_random_checkpoint
    from emfm.models.checkpoint import load_checkpoint, save_checkpoint

    other = write_random_checkpoint("dinov2", tmp_path / "other", hidden_size=32, num_layers=2, num_heads=2, seed=1)
    moved = tmp_path / "run"
    shutil.copytree(runs["frozen"], moved)
    segmenter, info = load_checkpoint(moved / CHECKPOINT_NAME)
    save_checkpoint(moved / CHECKPOINT_NAME, segmenter, dataclasses.replace(info, backbone=str(other)))
    with pytest.raises(RunDirError, match="was trained on backbone weights"):
        export_run(moved, tmp_path / "m.onnx", "onnx", license="MIT")
    assert not (tmp_path / "m.onnx").exists()


def test_outputs_that_exist_or_cannot_be_written_are_refused_before_loading(runs, tmp_path):
    run = runs["frozen"]
    existing = tmp_path / "m.zip"
    existing.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists; choose another --out or pass --overwrite"):
        export_run(run, existing, license="MIT")
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ConfigError, match="writes a .onnx file"):
        export_run(run, tmp_path / "m.zip", "onnx", license="MIT")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_run(run, tmp_path / "m.tf", "tensorflow")
    with pytest.raises(ConfigError, match="does not exist; create it"):
        export_run(run, existing / "inside.zip", license="MIT")  # a file where the folder should be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]


def test_an_unwritable_folder_is_refused(runs):
    import tempfile

    try:  # /sys refuses new files even to root on Linux; elsewhere this case cannot be made portably
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(ConfigError, match="cannot write to the output folder /sys"):
        export_run(runs["frozen"], "/sys/m.zip", license="MIT")


def test_a_failed_export_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    from emfm.export import onnx_file

    def half_written(module, example, path, **kwargs):
        Path(path).write_bytes(b"half an ONNX graph")
        raise CheckpointFormatError("this run's network does not export to ONNX: simulated")

    monkeypatch.setattr(onnx_file, "write_onnx", half_written)
    for fmt, name in (("onnx", "m.onnx"), ("bioimageio", "m.zip")):
        with pytest.raises(CheckpointFormatError, match="simulated"):
            export_run(runs["frozen"], tmp_path / name, fmt, license="MIT")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_prints_one_line_and_exits_2(runs, tmp_path, capsys):
    from emfm.cli import main

    (tmp_path / "m.onnx").write_bytes(b"x")
    code = main(["export", "--run", str(runs["frozen"]), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("emfm: error: ") and "Traceback" not in err
    assert main(["export", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "x.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "--model", str(runs["frozen"]), "--input", "x.tif", "--output", "y.tif"]) == 2
    assert "expected an `emfm export` output" in capsys.readouterr().err


# -- licences, authors, citations ---------------------------------------------------------------------


def info_for(backbone: str, name: str | None = None):
    from emfm.models.checkpoint import ModelInfo
    from emfm.transforms import IMAGENET_MEAN, IMAGENET_STD

    return ModelInfo(backbone=backbone, backbone_name=name or backbone, weights_id="w", head="linear", in_channels=8,
                     adapter="frozen", resolution=56, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def test_gated_backbones_are_refused_with_the_reason():
    from emfm.export.provenance import backbone_terms

    with pytest.raises(ConfigError, match="cannot export dinov3-s: its weights are gated"):
        backbone_terms(info_for("dinov3-s"), "dinov3", "MIT")
    with pytest.raises(ConfigError, match=r"dinov3_vits16.pth \(dinov3\): its weights are gated"):
        backbone_terms(info_for("/w/dinov3_vits16.pth", "dinov3_vits16.pth"), "dinov3", "MIT")


def test_licences_come_from_the_registry_or_must_be_given():
    from emfm.export.provenance import backbone_terms

    licence, terms, cites = backbone_terms(info_for("dinov2-s"), "dinov2", None)
    assert licence == "Apache-2.0" and "facebook/dinov2-small" in terms
    assert cites[0].doi == "10.48550/arXiv.2304.07193"
    assert backbone_terms(info_for("facebook/dinov2-small"), "dinov2", None)[0] == "Apache-2.0"
    with pytest.raises(ConfigError, match="not in emfm's registry.*pass --license"):
        backbone_terms(info_for("/w/dinov2-vits14-imgfocus", "dinov2-vits14-imgfocus"), "dinov2", None)
    licence, _, cites = backbone_terms(info_for("/w/dinov2-vits14-imgfocus"), "dinov2", "MIT")
    assert licence == "MIT" and "DINOv2" in cites[0].text  # the family's paper
    with pytest.raises(ConfigError, match="not an SPDX licence"):
        backbone_terms(info_for("/w/x"), "dinov2", "my own licence")
    licence, terms, cites = backbone_terms(info_for("unet-small"), "scratch", None)
    assert licence == "MIT" and "from scratch" in terms and "U-Net" in cites[0].text


def test_dataset_terms_and_citations_come_from_their_modules():
    from emfm.export.provenance import dataset_terms

    terms, cites = dataset_terms(["lucchi_pp", "vnc", "lucchi_pp"])
    assert [t.name for t in terms] == ["lucchi_pp", "vnc"]
    assert "research use" in terms[0].licence and "CC BY-NC-SA" in terms[1].licence
    assert cites[0].url and "Lucchi" in cites[0].text
    assert cites[1].doi == "10.6084/m9.figshare.856713"


# -- the pieces -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset,antialias", [(0.1, False), (0.0, True)])
def test_the_traceable_position_table_equals_the_official_one(offset, antialias):
    from emfm.backbones.dinov2 import official_position_embeddings
    from emfm.export.positions import traceable_position_embeddings

    table = torch.randn(1, 1 + 37 * 37, 6, generator=torch.Generator().manual_seed(0))
    for grid in [(37, 37), (27, 37), (10, 50), (2, 3), (73, 40)]:
        official = official_position_embeddings(table, *grid, offset=offset, antialias=antialias)
        ours = traceable_position_embeddings(table, *grid, offset=offset, antialias=antialias)
        assert ours.shape == official.shape
        # PyTorch's own float32 kernel is this far from float64
        torch.testing.assert_close(ours, official, atol=5e-5, rtol=0)
    same = traceable_position_embeddings(table, 37, 37, offset=offset, antialias=antialias)
    assert torch.equal(same, table)  # its own size: the table untouched, as officially


@pytest.mark.parametrize("adapter", ["frozen", "lora"])
def test_the_architecture_rebuilds_the_exported_network_from_its_kwargs(adapter, runs):
    from emfm.export.architecture import build_segmenter
    from emfm.export.prepare import load_run

    loaded = load_run(runs[adapter])
    rebuilt = build_segmenter(**loaded.kwargs)
    rebuilt.load_state_dict(loaded.module.state_dict(), strict=True)
    unit = torch.rand(2, 1, 42, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for got, want in zip(rebuilt(unit), loaded.module(unit)):
            assert torch.equal(got, want)


def test_lora_is_merged_into_plain_linear_layers(runs):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from emfm.export.prepare import load_run, merge_lora
    from emfm.models.checkpoint import load_checkpoint
    from emfm.transforms import normalise

    segmenter, info = load_checkpoint(runs["lora"] / CHECKPOINT_NAME)
    loaded = load_run(runs["lora"])
    assert not any(isinstance(m, BaseTunerLayer) for m in loaded.module.modules())
    assert merge_lora(segmenter.backbone.model) > 0  # the run's own model had LoRA layers to merge
    base, _ = load_checkpoint(runs["frozen"] / CHECKPOINT_NAME)
    merged_q = loaded.module.segmenter.backbone.model.encoder.layer[0].attention.q_proj.weight
    assert not torch.allclose(merged_q, base.backbone.model.encoder.layer[0].attention.q_proj.weight)
    unit = torch.rand(1, 1, 28, 56, generator=torch.Generator().manual_seed(2))
    segmenter, _ = load_checkpoint(runs["lora"] / CHECKPOINT_NAME)  # unmerged again
    with torch.no_grad():
        want = segmenter(normalise(unit[0, 0], info.mean, info.std)[None])
        got = loaded.module(unit)[2]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_the_network_input_is_the_runs_own_preprocessing(runs):
    import numpy as np

    from emfm.export.samples import network_input, unit_from_intensities

    info = read_info(runs["frozen"] / CHECKPOINT_NAME)
    image = np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8)
    unit, intensities = network_input(image, info.preprocessing, max_side=None)
    assert unit.shape == (1, 1, 28, 56) and float(intensities.max()) > 1.0
    torch.testing.assert_close(unit[0, 0], info.preprocessing.unit(image))
    torch.testing.assert_close(unit_from_intensities(intensities, "dtype", 255.0), unit, atol=1e-6, rtol=0)
    tiled_unit, _ = network_input(image, info.preprocessing, max_side=28)
    assert tiled_unit.shape == (1, 1, 28, 28)


def test_a_tiled_runs_package_declares_its_halo(runs, tmp_path):
    """A tiled run's network takes one tile at a time, so its package tells consumers what to crop."""
    import zipfile

    from bioimageio.core import test_model

    from emfm.export.package import PackageParts, write_package
    from emfm.export.prepare import load_run
    from emfm.export.provenance import provenance
    from emfm.export.samples import pick_test_slice

    loaded = load_run(runs["frozen"])
    info = dataclasses.replace(loaded.info, scale=1.0, tile=42, overlap=14)
    _, unit, intensities = pick_test_slice(loaded.config, loaded.module, info.preprocessing, max_side=42)
    parts = PackageParts(
        workdir=tmp_path, module=loaded.module, info=info, kwargs=loaded.kwargs, unit=unit, intensities=intensities,
        dtype_max=255.0, halo=7, onnx=None, provenance=provenance(info, "dinov2", loaded.config, license="MIT",
                                                                 authors=None),
        metadata={"model_info": {}, "max_side": 42, "halo": 7},
    )
    write_package(parts, tmp_path / "tiled.zip", "emfm tiled test")
    with zipfile.ZipFile(tmp_path / "tiled.zip") as z:
        rdf, readme = z.read("rdf.yaml").decode(), z.read("README.md").decode()
    import yaml

    halos = [a.get("halo") for out in yaml.safe_load(rdf)["outputs"] for a in out["axes"] if a["type"] == "space"]
    assert halos == [7] * 6  # y and x of the three outputs
    assert "feed at most 42 px a side" in readme and "halo of 7 px" in readme
    assert test_model(tmp_path / "tiled.zip").status == "passed"
