"""``emfm adapt`` from the command line: an adapted run that ``emfm evaluate`` and ``emfm predict`` take, and user
errors as one line, exit 2, without a traceback and without an output directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tifffile

from emfm.cli import main
from emfm.config import TrainConfig
from emfm.train.run import train_run
from tests.adapt.helpers import target_images, write_target


@pytest.fixture(scope="module")
def run_and_target(tiny_backbone_dir, datasets, tmp_path_factory):
    a, _ = datasets
    base = tmp_path_factory.mktemp("adapt_cli")
    config = TrainConfig.from_dict({"backbone": str(tiny_backbone_dir), "train": [a], "cache_dir": str(base / "c"),
                                    "epochs": 1, "resolution": 56, "lr": 1e-3, "min_steps": 0})
    train_run(config, base / "run", progress=False)
    return base / "run", write_target(base / "target", n=3, shape=(40, 56), seed=9)


def test_adapt_then_evaluate_and_predict(run_and_target, tmp_path, capsys):
    run, target = run_and_target
    out = tmp_path / "adapted"
    assert main(["adapt", "--run", str(run), "--target", f"folder:{target}", "--method", "self-training",
                 "--set", "steps=2", "--set", "threshold=0.7", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"adapted run {out}: self-training of {run}" in printed and "2 steps, confident pixels" in printed
    assert "with the run's supervised loss" in printed and f"emfm evaluate --run {out}" in printed
    record = json.loads((out / "adapt.json").read_text())
    assert record["settings"]["steps"] == 2 and record["settings"]["threshold"] == 0.7
    assert main(["evaluate", "--run", str(out), "--test", f"folder:{target}", "--no-progress"]) == 0
    volume = tmp_path / "v.tif"
    tifffile.imwrite(volume, target_images(target), photometric="minisblack")
    assert main(["predict", "--run", str(out), "--input", str(volume), "--output", str(tmp_path / "m.tif"),
                 "--no-progress"]) == 0
    assert tifffile.imread(tmp_path / "m.tif").shape == (3, 40, 56)


@pytest.mark.parametrize("change,message", [
    ({"--run": "/nonexistent/run"}, "run directory /nonexistent/run does not exist"),
    ({"--target": "folder:{tmp}/empty"}, "has no images/ folder"),
    ({"--method": "adabm"}, "unknown adaptation method 'adabm'. Did you mean 'adabn'?"),
    ({"--set": "stepz=3"}, "unknown self-training setting key 'stepz' (did you mean 'steps'?)"),
    ({"--set": "steps=many"}, "steps must be an integer, got 'many'"),
    ({"--set": "steps"}, "override 'steps' is not of the form key=value"),
])
def test_user_errors_are_one_line_and_write_nothing(change, message, run_and_target, tmp_path, capsys):
    run, target = run_and_target
    (tmp_path / "empty").mkdir()
    args = {"--run": str(run), "--target": f"folder:{target}", "--method": "self-training", "--set": "steps=1"}
    args.update({k: v.format(tmp=tmp_path) for k, v in change.items()})
    out = tmp_path / "adapted"
    argv = ["adapt", *[x for kv in args.items() for x in kv], "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emfm: error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert not out.exists()


def test_building_the_adapt_parser_imports_no_torch():
    code = ("import sys; from emfm.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'emfm.adapt' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
