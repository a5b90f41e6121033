"""The adapted run directory: what ``adapt.json`` records, and which ``--out`` is refused (the source run always;
a folder holding anything but this same adaptation unless ``overwrite``); a refused job writes nothing."""

from __future__ import annotations

import json
import re

import pytest

from emfm.adapt import ADAPT_METHODS, adapt_run
from emfm.cli.adapt import METHODS
from emfm.errors import ConfigError, RunDirError, UnknownNameError


def test_adapt_json_records_source_method_settings_target_and_time(linear_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    adapt_run(linear_run, f"folder:{target_dir}", "self-training", out, settings={"steps": 2, "threshold": 0.8},
              progress=False)
    record = json.loads((out / "adapt.json").read_text())
    assert record["source_run"] == str(linear_run.resolve()) and len(record["source_checkpoint_sha256"]) == 64
    assert record["method"] == "self-training" and "Tarvainen" in record["method_source"]
    assert record["settings"]["threshold"] == 0.8 and record["settings"]["decay"] == 0.99 and record["steps"] == 2
    target = record["target"]
    assert target["spec"] == f"folder:{target_dir}" and target["kind"] == "folder" and target["slices"] == 4
    assert target["fingerprint"]["files"] == 4 and len(target["slices_sha256"]) == 64
    assert len(record["confident_fraction"]) == 2 and record["seconds"] > 0
    for name in ("config.yaml", "env.json", "splits.json", "checkpoint.safetensors"):
        assert (out / name).is_file(), name


def test_an_out_that_holds_something_else_is_refused(linear_run, target_dir, tmp_path):
    name = f"folder:{target_dir}"
    with pytest.raises(RunDirError, match="never modified"):
        adapt_run(linear_run, name, "adabn", linear_run, overwrite=True, progress=False)
    with pytest.raises(RunDirError, match="never modified"):
        adapt_run(linear_run, name, "adabn", linear_run / "inside", progress=False)
    assert not (linear_run / "inside").exists() and not (linear_run / "adapt.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already holds something else"):
        adapt_run(linear_run, name, "adabn", other, progress=False)
    out = tmp_path / "adapted"
    adapt_run(linear_run, name, "adabn", out, progress=False)
    adapt_run(linear_run, name, "adabn", out, progress=False)  # the same job again: replaced
    with pytest.raises(RunDirError, match="already holds something else"):
        adapt_run(linear_run, name, "self-training", out, settings={"steps": 1}, progress=False)
    adapt_run(linear_run, name, "self-training", out, settings={"steps": 1}, overwrite=True, progress=False)
    assert json.loads((out / "adapt.json").read_text())["method"] == "self-training"
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("method,settings,error,message", [
    ("adabm", None, UnknownNameError, "Did you mean 'adabn'"),
    ("self-training", {"step": 3}, ConfigError, "unknown self-training setting key 'step' (did you mean 'steps'?)"),
    ("self-training", {"threshold": 2}, ConfigError, "threshold must be >= 0 and <= 1, got 2"),
    ("self-training", {"crop": 20}, ConfigError, "crop 20 is not a multiple of the run's patch size 14; use 14"),
    ("adabn", {"steps": 3}, ConfigError, "unknown adapt setting key 'steps'"),
])
def test_bad_methods_and_settings_write_nothing(method, settings, error, message, linear_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    with pytest.raises(error, match=re.escape(message)):
        adapt_run(linear_run, f"folder:{target_dir}", method, out, settings=settings, progress=False)
    assert not out.exists()


def test_the_cli_names_the_registered_methods():
    assert tuple(ADAPT_METHODS.names()) == METHODS


def test_a_bf16_run_is_adapted_on_bf16_features_read_from_the_entries_training_wrote(
    tiny_backbone_dir, source_set, target_dir, tmp_path, monkeypatch
):
    """A frozen run trained with --precision bf16 where bf16 is native cached bf16 features: adapting it encodes
    the target in bf16 too, and finds its training set's features in the entries training wrote."""
    from emfm.adapt.source import encode_target, load_source_run
    from emfm.adapt.target import load_target
    from emfm.config import TrainConfig
    from emfm.data import load_split
    from emfm.features import encode_stack
    from emfm.hardware import CPU_FLAGS, describe_hardware
    from emfm.train.run import train_run

    hw = describe_hardware()
    hw["cpu"]["flags"] = {f: f in ("avx2", "avx512f", "amx_bf16", "amx_tile") for f in CPU_FLAGS}
    monkeypatch.setattr("emfm.hardware.describe_hardware", lambda: {**hw, "gpu": None})
    monkeypatch.setattr("emfm.hardware.training_device", lambda: "cpu")
    run = tmp_path / "bf16-run"
    train_run(TrainConfig.from_dict(dict(
        backbone=str(tiny_backbone_dir), train=[source_set], test=[source_set], cache_dir=str(tmp_path / "cache"),
        epochs=1, resolution=56, lr=1e-3, min_steps=0, batch_size=2, precision="bf16")), run, progress=False)
    source = load_source_run(run)
    assert source.encode_precision == "bf16"
    prep, cache = source.info.preprocessing, source.cache
    trained_on = load_split(source_set, "train", progress=False)
    for precision, cached in (("bf16", len(trained_on)), ("32", 0)):  # training's entries are bf16 ones
        f = encode_stack(source.backbone, trained_on, preprocessing=prep, cache=cache, precision=precision,
                         progress=False)
        assert f.n_cached == cached
    target = load_target(f"folder:{target_dir}")
    encoded = encode_target(source, target, progress=False)
    again = encode_stack(source.backbone, target.stack(), preprocessing=prep, cache=cache, precision="bf16",
                         progress=False)
    assert encoded.n_computed == len(target) == again.n_cached
