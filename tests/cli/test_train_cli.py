"""`emfm train`, `emfm evaluate` and `emfm study` from the command line: results printed, user errors
as one line and exit 2 without a traceback."""

from __future__ import annotations

import json

import pytest
import yaml

from emfm.cli import main


def test_train_then_evaluate(tiny_backbone_dir, datasets, tmp_path, capsys):
    a, b = datasets
    out = tmp_path / "run"
    code = main(["train", "--backbone", str(tiny_backbone_dir), "--train", a, "--test", f"{a},{b}", "--epochs", "1",
                 "--resolution", "56", "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--no-progress",
                 "--set", "lr=0.001"])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['test'][a]['fg_iou']:.4f}" in printed and "pooled" in printed
    ci = metrics["test"][a]["fg_iou_interval"]  # each test set's interval over its slices, printed beside it
    assert f"[{ci['low']:.3f}, {ci['high']:.3f}]" in printed
    assert "moving-block bootstrap over the test slices" in printed
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.001
    assert main(["evaluate", "--run", str(out), "--test", b, "--no-progress"]) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["test"][b]["fg_iou"] == metrics["test"][b]["fg_iou"]


@pytest.mark.parametrize(
    "argv,message",
    [(["train", "--train", "vnc"], "missing --backbone"),
     (["train", "--backbone", "dinov2-lg", "--train", "vnc", "--data-root", "/nonexistent"], None),
     (["evaluate", "--run", "/nonexistent/run"], "is not a run directory"),
     (["study", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist")],
)
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emfm: error: ") and "\n" not in err and "Traceback" not in err
    if message:
        assert message in err


def test_study_config_error_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"backbones": ["b"], "train_sets": ["vnc"], "test_sets": ["vnc"], "seeds": [0],
                                   "defaults": {"epoch": 2}}))
    assert main(["study", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown run setting key 'epoch' (did you mean 'epochs'?)" in capsys.readouterr().err


def test_crops_per_set_flag_reaches_the_config():
    from emfm.cli import build_parser
    from emfm.cli.train import build_config

    argv = ["train", "--backbone", "b", "--train", "lucchi_pp,vnc", "--crop", "224"]
    parser = build_parser()
    assert build_config(parser.parse_args([*argv, "--crops-per-set"])).crops_per_set is True
    assert build_config(parser.parse_args(argv)).crops_per_set is False
