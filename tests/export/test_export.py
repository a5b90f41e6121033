"""``emfm export`` end to end on tiny random-backbone runs (frozen and LoRA): both formats, ONNX Runtime
against the run's own model, bioimage.io.core's model test, and ``emfm predict --model`` against the run."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from emfm.export import exported_info, load_exported
from emfm.export.onnx_file import read_metadata, session
from emfm.models.checkpoint import CHECKPOINT_NAME, load_checkpoint, read_info
from tests.predict.helpers import read_any, read_output, synthetic_volume, write_input

ADAPTERS = ["frozen", "lora"]


def run_logits(run, unit: torch.Tensor) -> torch.Tensor:
    """The run's own model (LoRA kept as peft layers) on a grey (B, 1, H, W) input in [0, 1]."""
    from emfm.transforms import normalise

    segmenter, info = load_checkpoint(run / CHECKPOINT_NAME)
    pixels = torch.stack([normalise(u[0], info.mean, info.std) for u in unit])
    with torch.no_grad():
        return segmenter(pixels)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_run_exports_to_both_formats_with_its_preprocessing_recorded(adapter, runs, exports):
    info = read_info(runs[adapter] / CHECKPOINT_NAME)
    onnx_file, package = exports[adapter, "onnx"], exports[adapter, "bioimageio"]
    record = read_metadata(onnx_file)
    assert record["dynamic"] is True and record["input"] == "unit" and record["dtype_max"] == 255.0
    assert exported_info(onnx_file) == info == exported_info(package)  # ModelInfo, preprocessing included
    assert exported_info(package).preprocessing == info.preprocessing
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        rdf = z.read("rdf.yaml").decode()
    assert {"weights.pt", "model.onnx", "architecture.py", "README.md", "test_input.npy", "test_mask.npy"} <= names
    assert "scale_linear" in rdf and "clip" in rdf and "Test Author" in rdf and "license: MIT" in rdf
    assert info.adapter == adapter


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_onnx_runtime_equals_the_run_within_1e_4_at_several_sizes(adapter, runs, exports):
    ort = session(exports[adapter, "onnx"])
    rng = np.random.default_rng(3)
    for shape in [(2, 1, 28, 56), (1, 1, 56, 56), (3, 1, 42, 84), (1, 1, 70, 28)]:
        unit = torch.from_numpy(rng.uniform(0, 1, shape).astype(np.float32))
        probability, mask, logits = ort.run(None, {"unit": unit.numpy()})
        expected = run_logits(runs[adapter], unit)
        assert logits.shape == tuple(expected.shape) and mask.dtype == np.uint8
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(probability, expected.softmax(1)[:, 1:].numpy(), atol=1e-4, rtol=0)
        decided = (expected[:, 1:] - expected[:, :1]).abs().numpy() > 1e-4
        assert np.array_equal(mask[decided], expected.argmax(1, keepdim=True).numpy()[decided])


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bioimageio_core_model_test_passes(adapter, exports):
    from bioimageio.core import test_model

    summary = test_model(exports[adapter, "bioimageio"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = {d.name for d in summary.details}
    assert "Reproduce test outputs from test inputs (onnx)" in tested
    assert "Reproduce test outputs from test inputs (pytorch_state_dict)" in tested


@pytest.mark.parametrize("kind", ["onnx", "bioimageio"])
def test_predicting_a_volume_from_the_export_gives_the_run_dir_masks(kind, runs, exports, tmp_path):
    from emfm.predict import predict_volume

    spec = write_input("tif", synthetic_volume(n=3, shape=(40, 56), seed=4), tmp_path)
    run, model = runs["lora"], exports["lora", kind]
    predict_volume(run, spec, tmp_path / "run.tif", probabilities=tmp_path / "run_p.tif", progress=False)
    result = predict_volume(model, spec, tmp_path / "export.tif", probabilities=tmp_path / "export_p.tif",
                            progress=False)
    assert result["complete"] and result["computed"] == 3
    masks = read_output(tmp_path / "run.tif")
    assert 0 < masks.mean() < 1  # foreground and background to agree on
    np.testing.assert_array_equal(read_output(tmp_path / "export.tif"), masks)
    p_run, p_export = read_any(tmp_path / "run_p.tif"), read_any(tmp_path / "export_p.tif")
    np.testing.assert_allclose(p_export.astype(np.float32), p_run.astype(np.float32), atol=1e-3)  # float16 steps


def test_tile_mode_with_the_export_matches_the_run_dir(runs, exports, tmp_path):
    from emfm.predict import PredictSettings, predict_volume

    spec = write_input("tif", synthetic_volume(n=2, shape=(40, 56), seed=5), tmp_path)
    settings = PredictSettings(mode="tile", tile=28, halo=4, scale=1.0)
    predict_volume(runs["frozen"], spec, tmp_path / "run.tif", settings, progress=False)
    predict_volume(exports["frozen", "onnx"], spec, tmp_path / "export.tif", settings, progress=False)
    np.testing.assert_array_equal(read_output(tmp_path / "export.tif"), read_output(tmp_path / "run.tif"))


def test_the_cli_exports_and_predicts_with_model(runs, exports, tmp_path, capsys):
    from emfm.cli import main

    code, text = exports["cli"]
    assert code == 0 and "onnx model (" in text and "dynamic height and width" in text and "licence MIT" in text
    assert "ONNX Runtime matches PyTorch" in text
    spec = write_input("tif", synthetic_volume(n=2, shape=(40, 56), seed=6), tmp_path)
    out = tmp_path / "m.tif"
    assert main(["predict", "--model", str(exports["frozen", "bioimageio"]), "--input", spec, "--output", str(out),
                 "--no-progress"]) == 0
    assert "masks 2 x 40 x 56 (resize mode)" in capsys.readouterr().out
    assert read_output(out).shape == (2, 40, 56)


def test_the_package_documents_terms_and_scores(runs, exports):
    with zipfile.ZipFile(exports["frozen", "bioimageio"]) as z:
        readme = z.read("README.md").decode()
    metrics = json.loads((runs["frozen"] / "metrics.json").read_text())
    name = next(iter(metrics["test"]))
    assert "## Validation" in readme and f"fg_iou {metrics['test'][name]['fg_iou']:.4f}" in readme
    assert "longest edge is 56 px" in readme and "multiple of 14 px" in readme
    assert "tiny-dinov2: MIT (as stated by the exporter)" in readme


def test_an_exported_model_refuses_what_it_cannot_run(exports, tmp_path):
    from emfm.errors import ConfigError, RunDirError

    model = load_exported(exports["frozen", "onnx"])
    model.max_side = 28  # as a tiled run's export records it
    with pytest.raises(ConfigError, match="at most 28 px a side"):
        model(torch.zeros(1, 1, 28, 56))
    with pytest.raises(RunDirError, match="no exported model"):
        load_exported(tmp_path / "missing.onnx")
    (tmp_path / "other.onnx").write_bytes(b"not onnx")
    with pytest.raises(RunDirError, match="not an ONNX file"):
        load_exported(tmp_path / "other.onnx")
