"""The test sets' distance from a run's training sets in its backbone's features: exact in the samples' own
span, larger for a folder shifted in intensity than for one drawn like the training set, in evaluate's JSON
and printed summary, skipped on request, and a missing training set is one line beside the IoU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from emfm.adapters import create_adapter
from emfm.analysis.frechet import frechet_distance
from emfm.cli import main
from emfm.config import TrainConfig
from emfm.evaluate.run import evaluate_run
from emfm.evaluate.transfer import feature_cache, pair_shift, span_coordinates
from emfm.train.run import train_run
from tests.helpers import write_folder_dataset


def test_the_distance_in_the_samples_span_is_the_distance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 40)), rng.normal(size=(7, 40)) * 2 + 1
    xs, ys = span_coordinates(x, y)
    assert xs.shape == (5, 11) and ys.shape == (7, 11)
    # In 40 dimensions the square roots of the null space's round-off eigenvalues (~1e-8 each) add up to a
    # relative 1e-8; in the span there is almost no null space, so agreement is to that rounding.
    full = frechet_distance(x, y, method="eigh").value
    assert frechet_distance(xs, ys, method="eigh").value == pytest.approx(full, rel=1e-7)
    assert frechet_distance(xs, ys).value == pytest.approx(frechet_distance(x, y).value, rel=1e-7)  # sqrtm too
    half = frechet_distance(xs[:3], ys[2:], method="eigh").value  # resamples stay inside the span
    assert half == pytest.approx(frechet_distance(x[:3], y[2:], method="eigh").value, rel=1e-7)
    assert abs(full - frechet_distance(x, y * 1.01, method="eigh").value) > 1e-3 * full  # rel=1e-7 is tight
    big = rng.normal(size=(30, 4))
    assert span_coordinates(big[:10], big[10:])[0] is not big  # more samples than dimensions: as they are
    assert np.allclose(span_coordinates(big[:10], big[10:])[0], big[:10])


def test_a_pair_reports_distance_interval_baselines_and_auc():
    rng = np.random.default_rng(1)
    same = pair_shift(rng.normal(size=(8, 6)), rng.normal(size=(12, 6)), n_boot=50)
    apart = pair_shift(rng.normal(size=(8, 6)) + 3, rng.normal(size=(12, 6)), n_boot=50)
    for s in (same, apart):
        fd = s["frechet"]
        assert fd["interval"]["low"] < fd["interval"]["high"] and fd["interval"]["n_boot"] == 50
        assert fd["interval"]["bias"] > 0  # the Fréchet distance's small-sample bias is upwards
        assert set(fd["baselines"]) == {"test", "train"} and s["n_images"] == {"test": 8, "train": 12}
    assert apart["frechet"]["value"] > 10 * same["frechet"]["value"]
    assert apart["frechet"]["above_baselines"] and not same["frechet"]["above_baselines"]
    assert apart["probe_auc"] > 0.95 and same["probe_auc"] < 0.8
    tiny = pair_shift(rng.normal(size=(1, 6)), rng.normal(size=(3, 6)), n_boot=10)
    assert tiny["frechet"] is None and "at least 2 samples" in tiny["frechet_note"]
    assert tiny["probe_auc"] is None and "no domain probe" in tiny["probe_note"]


def test_only_a_frozen_backbone_reads_the_feature_cache(tmp_path):
    config = SimpleNamespace(cache_dir=str(tmp_path))
    frozen = SimpleNamespace(make_adapter=lambda: create_adapter("frozen"))
    lora = SimpleNamespace(make_adapter=lambda: create_adapter("lora"))
    assert feature_cache(config, frozen).root == tmp_path and feature_cache(config, lora) is None


@pytest.fixture(scope="module")
def run(tiny_backbone_dir, tmp_path_factory):
    """A frozen run on one folder set, and two test folders: drawn like it, and the same drawn brighter."""
    base = tmp_path_factory.mktemp("transfer")
    train = write_folder_dataset(base / "train", n_train=12, n_test=2, shape=(40, 56), seed=1)
    same = write_folder_dataset(base / "same", n_train=1, n_test=8, shape=(40, 56), seed=5)
    bright = write_folder_dataset(base / "bright", n_train=1, n_test=8, shape=(40, 56), seed=5)
    for path in (base / "bright" / "test" / "images").glob("*.png"):
        img = np.asarray(Image.open(path)).astype(float)
        Image.fromarray(np.clip(img * 0.5 + 120, 0, 255).astype(np.uint8)).save(path)
    config = TrainConfig.from_dict({"backbone": str(tiny_backbone_dir), "train": train, "test": train, "epochs": 1,
                                    "resolution": 56, "lr": 1e-3, "min_steps": 0, "cache_dir": str(base / "cache")})
    train_run(config, base / "run", progress=False)
    return base, base / "run", train, same, bright


def test_a_shifted_folder_lies_further_from_the_training_set(run):
    _, out, train, same, bright = run
    result = evaluate_run(out, test=[same, bright], progress=False)
    near, far = result["shift"][same][train], result["shift"][bright][train]
    assert far["frechet"]["value"] > 2 * near["frechet"]["value"]
    assert far["frechet"]["interval"]["low"] > near["frechet"]["interval"]["high"]
    assert far["probe_auc"] > 0.9 and far["probe_auc"] > near["probe_auc"] + 0.2
    assert near["n_images"] == {"test": 8, "train": 11}  # the training split (one slice is validation)
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["shift"][bright][train]["probe_auc"] == far["probe_auc"] and "fg_iou" in saved["test"][bright]


def test_the_cli_prints_the_shift_and_skips_it_on_request(run, capsys):
    _, out, train, _, bright = run
    assert main(["evaluate", "--run", str(out), "--test", bright, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{bright} vs {train}: FD " in printed and "AUC " in printed
    assert main(["evaluate", "--run", str(out), "--test", bright, "--no-progress", "--no-shift"]) == 0
    assert "FD " not in capsys.readouterr().out
    assert "shift" not in json.loads((out / "evaluation.json").read_text())


def test_missing_training_data_is_one_line_and_the_iou_is_still_reported(run, tmp_path, capsys):
    base, out, train, same, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    folder = Path(train.split(":", 1)[1])
    folder.rename(folder.with_name("moved"))
    try:
        assert main(["evaluate", "--run", str(copy), "--test", same, "--no-progress"]) == 0
    finally:
        folder.with_name("moved").rename(folder)
    printed = capsys.readouterr().out
    saved = json.loads((copy / "evaluation.json").read_text())
    assert "fg_iou" in saved["test"][same] and saved["shift"] == {}
    assert saved["shift_note"].startswith(f"training set(s) not found, so no shift from them: {train} (")
    note_lines = [line for line in printed.splitlines() if line.startswith("shift: ")]
    assert len(note_lines) == 1 and "not found" in note_lines[0]
