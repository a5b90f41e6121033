"""``emfm predict``: a thin wrapper that prints where it wrote and how fast; errors as one line."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.cli import main
from tests.predict.helpers import make_vit_run, read_any, read_output, synthetic_volume, write_input


@pytest.fixture(scope="module")
def run_and_input(tmp_path_factory):
    from emfm.backbones._testing import write_random_checkpoint

    base = tmp_path_factory.mktemp("cli")
    bb = write_random_checkpoint("dinov2", base / "bb", hidden_size=32, num_layers=2, num_heads=2)
    run = make_vit_run(base / "run", bb)
    spec = write_input("tif", synthetic_volume(n=4, shape=(40, 56)), base)
    return run, spec


def test_predict_prints_output_and_throughput(run_and_input, tmp_path, capsys):
    run, spec = run_and_input
    out, prob = tmp_path / "m.ome.zarr", tmp_path / "p.tif"
    code = main(["predict", "--run", str(run), "--input", spec, "--output", str(out), "--probabilities", str(prob),
                 "--probability-dtype", "uint8", "--batch-size", "2", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"masks 4 x 40 x 56 (resize mode) -> {out}" in text
    assert f"foreground probabilities (uint8) -> {prob}" in text
    assert "computed 4 slices, 0 already done" in text and "slices/s on cpu" in text
    assert read_output(out).shape == (4, 40, 56) and read_any(prob).dtype == np.uint8


def test_predict_partial_then_resume_and_dask(run_and_input, tmp_path, capsys):
    run, spec = run_and_input
    out = tmp_path / "m.zarr"
    base = ["predict", "--run", str(run), "--input", spec, "--output", str(out), "--no-progress"]
    assert main(base + ["--max-slices", "1"]) == 0
    assert "(partial: rerun the same command to finish)" in capsys.readouterr().out
    assert main(base + ["--workers", "2", "--block-slices", "2"]) == 0
    text = capsys.readouterr().out
    assert "computed 3 slices, 1 already done" in text
    assert main(["predict", "--run", str(run), "--input", spec, "--output", str(tmp_path / "ref.zarr"),
                 "--no-progress"]) == 0
    np.testing.assert_array_equal(read_output(out), read_output(tmp_path / "ref.zarr"))


def test_predict_tile_mode(run_and_input, tmp_path, capsys):
    run, spec = run_and_input
    out = tmp_path / "t.tif"
    assert main(["predict", "--run", str(run), "--input", spec, "--output", str(out), "--mode", "tile", "--tile", "28",
                 "--halo", "4", "--scale", "1.0", "--no-progress"]) == 0
    assert "(tile mode)" in capsys.readouterr().out
    assert read_any(out).shape == (4, 40, 56)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--output", "{tmp}/m.npy"], "emfm: error: unknown output extension '.npy'"),
        (["--run", "{tmp}", "--output", "{tmp}/m.zarr"], "has no checkpoint.safetensors: it is not a trained run"),
        (["--output", "{tmp}/m.zarr", "--mode", "tile", "--tile", "30"],
         "--tile 30 is not a multiple of the backbone's patch size 14"),
        (["--output", "{tmp}/m.zarr", "--dask", "--max-slices", "1"], "--max-slices works without dask only"),
    ],
)
def test_predict_errors_are_one_line(run_and_input, tmp_path, capsys, extra, message):
    run, spec = run_and_input
    args = ["predict", "--run", str(run), "--input", spec, "--no-progress"]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("where", ["set", "config"])
def test_a_mistyped_setting_is_one_line_with_the_nearest_key(run_and_input, tmp_path, capsys, where):
    run, spec = run_and_input
    args = ["predict", "--run", str(run), "--input", spec, "--output", str(tmp_path / "m.zarr"), "--no-progress"]
    if where == "set":
        args += ["--set", "batchsize=2"]
    else:
        (tmp_path / "p.yaml").write_text("batchsize: 2\n")
        args += ["--config", str(tmp_path / "p.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emfm: error: unknown predict key 'batchsize' (did you mean 'batch_size'?); valid keys: ")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.zarr").exists()


def test_a_bad_setting_value_is_one_line(run_and_input, tmp_path, capsys):
    run, spec = run_and_input
    assert main(["predict", "--run", str(run), "--input", spec, "--output", str(tmp_path / "m.zarr"),
                 "--set", "batch_size=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "emfm: error: batch_size must be >= 1, got 0"


def _settings(argv):
    from emfm.cli import build_parser
    from emfm.cli.predict import predict_settings

    args = build_parser().parse_args(["predict", "--run", "r", "--input", "i", "--output", "o", *argv])
    return predict_settings(args)


def test_config_then_flags_then_set(tmp_path):
    from emfm.predict import PredictSettings

    cfg = tmp_path / "p.yaml"
    cfg.write_text("mode: tile\nbatch_size: 3\nscale: 0.5\nbf16: true\n")
    assert _settings([]) == PredictSettings()
    assert _settings(["--config", str(cfg)]) == PredictSettings(mode="tile", batch_size=3, scale=0.5, bf16=True)
    # a flag overrides the file; flags not given leave the file's values alone
    flagged = _settings(["--config", str(cfg), "--batch-size", "5"])
    assert flagged == PredictSettings(mode="tile", batch_size=5, scale=0.5, bf16=True)
    # --set overrides both, values read as YAML
    got = _settings(["--config", str(cfg), "--batch-size", "5", "--set", "batch_size=7", "--set", "bf16=false",
                     "--set", "device=cpu"])
    assert got == PredictSettings(mode="tile", batch_size=7, scale=0.5, bf16=False, device="cpu")


def test_every_setting_can_be_given_by_name():
    from emfm.cli.predict import SETTING_KEYS
    from emfm.predict import PredictSettings

    assert sorted(SETTING_KEYS) == sorted(PredictSettings.field_names())


def test_set_and_config_take_effect_in_a_run(run_and_input, tmp_path, capsys):
    run, spec = run_and_input
    cfg = tmp_path / "p.yaml"
    cfg.write_text("mode: tile\ntile: 28\nhalo: 4\nscale: 1.0\n")
    out, prob = tmp_path / "t.zarr", tmp_path / "p.zarr"
    assert main(["predict", "--run", str(run), "--input", spec, "--output", str(out), "--config", str(cfg),
                 "--probabilities", str(prob), "--set", "probability_dtype=uint8", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "(tile mode)" in text and f"foreground probabilities (uint8) -> {prob}" in text
    assert read_any(prob).dtype == np.uint8
    ref = tmp_path / "ref.zarr"
    assert main(["predict", "--run", str(run), "--input", spec, "--output", str(ref), "--mode", "tile", "--tile", "28",
                 "--halo", "4", "--scale", "1.0", "--no-progress"]) == 0
    np.testing.assert_array_equal(read_output(out), read_output(ref))


def test_building_the_predict_parser_imports_neither_torch_nor_the_predictor():
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "from emfm.cli import predict\n"
        "predict.add_parser(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('torch', 'emfm.predict', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
