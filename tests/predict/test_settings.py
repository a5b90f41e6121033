"""PredictSettings: every setting checked by name with its valid range, typos answered with a hint,
and the run-dependent checks made when a job is planned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emfm.errors import ConfigError, EmfmError
from emfm.predict import PredictSettings, plan_prediction, predict_dask_array, predict_volume, predict_volume_dask
from emfm.predict.runner import resolve_device, resolve_tiling
from tests.predict.helpers import PixelBackbone, write_input


def test_defaults_and_round_trip():
    s = PredictSettings()
    assert (s.mode, s.batch_size, s.probability_dtype, s.bf16, s.device) == ("resize", 4, "float16", False, None)
    tiled = PredictSettings(mode="tile", tile=28, halo=3, scale=0.5, bf16=True, device="cpu")
    assert PredictSettings.from_dict(tiled.to_dict()) == tiled
    import yaml

    assert PredictSettings.from_dict(yaml.safe_load(tiled.to_yaml())) == tiled
    assert tiled.replace(batch_size=1).batch_size == 1 and tiled.batch_size == 4


def test_unknown_key_names_the_nearest_one():
    with pytest.raises(ConfigError) as err:
        PredictSettings.from_dict({"batchsize": 2})
    msg = str(err.value)
    assert msg.startswith("unknown predict key 'batchsize' (did you mean 'batch_size'?); valid keys: ")
    assert msg.endswith("valid keys: batch_size, bf16, device, halo, mode, probability_dtype, scale, tile")
    with pytest.raises(ConfigError, match=r"unknown predict keys 'overwrite'; 'tiles' \(did you mean 'tile'\?\)"):
        PredictSettings.from_dict({"tiles": 8, "overwrite": True})


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"mode": "crop"}, "unknown mode 'crop'; use one of 'resize', 'tile'"),
        ({"probability_dtype": "float32"}, "unknown probability_dtype 'float32'; use one of 'float16', 'uint8'"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
        ({"tile": 0}, "tile must be >= 1, got 0"),
        ({"tile": "big"}, "tile must be an integer, got 'big'"),
        ({"halo": -1}, "halo must be >= 0, got -1"),
        ({"scale": 0}, "scale must be > 0, got 0"),
        ({"scale": -0.5}, "scale must be > 0, got -0.5"),
        ({"scale": "half"}, "scale must be a number, got 'half'"),
        ({"bf16": "yes please"}, "bf16 must be true or false, got 'yes please'"),
        ({"device": ""}, "device must be a name such as 'cpu', 'cuda' or 'cuda:1', got ''"),
        ({"device": 0}, "device must be a name such as 'cpu', 'cuda' or 'cuda:1', got 0"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_setting(changes, message):
    with pytest.raises(ConfigError) as err:
        PredictSettings(**changes)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_numbers_from_yaml_and_numpy_become_plain_numbers():
    s = PredictSettings.from_dict({"mode": "tile", "scale": "5e-1", "tile": np.int64(28), "halo": np.int32(3)})
    assert s.scale == 0.5 and type(s.tile) is int and type(s.halo) is int and s.tile == 28
    assert type(PredictSettings(scale=np.float32(0.25)).scale) is float


def test_model_key_ignores_how_probabilities_are_stored():
    a, b = PredictSettings(), PredictSettings(probability_dtype="uint8")
    assert a.model_key() == b.model_key() and a.model_key() != PredictSettings(batch_size=1).model_key()


class _Info:
    resolution, patch_size = 56, 14


def test_resolve_tiling_fills_the_runs_defaults_and_checks_them():
    assert resolve_tiling(PredictSettings(tile=28, halo=2, scale=0.5), _Info()) == PredictSettings()
    tiled = resolve_tiling(PredictSettings(mode="tile", scale=1.0), _Info())
    assert (tiled.tile, tiled.halo, tiled.scale) == (56, 7, 1.0)
    with pytest.raises(ConfigError, match="--tile 30 is not a multiple of the backbone's patch size 14"):
        resolve_tiling(PredictSettings(mode="tile", tile=30, scale=1.0), _Info())
    with pytest.raises(ConfigError, match=r"--halo 14 must be >= 0 and less than half the tile \(28\)"):
        resolve_tiling(PredictSettings(mode="tile", tile=28, halo=14, scale=1.0), _Info())
    with pytest.raises(ConfigError, match="tile mode needs scale"):
        resolve_tiling(PredictSettings(mode="tile"), _Info())


def test_resolve_device_chooses_and_checks():
    assert resolve_device(PredictSettings()).device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(PredictSettings(device="cpu")).device == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'gpu'; use e.g. 'cpu', 'cuda' or 'cuda:1'"):
        resolve_device(PredictSettings(device="gpu"))
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {n} CUDA GPU"):
            resolve_device(PredictSettings(device=f"cuda:{n}"))
    else:
        with pytest.raises(ConfigError, match="device 'cuda': this machine has no usable CUDA GPU; use device 'cpu'"):
            resolve_device(PredictSettings(device="cuda"))


def test_the_planned_job_holds_resolved_settings(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    job = plan_prediction(pixel_run, spec, tmp_path / "o.zarr", PredictSettings(mode="tile", scale=1.0, device="cpu"))
    # pixel_run: resolution 32, patch 1 -> tile 32, halo 32 // 8
    assert job.settings == PredictSettings(mode="tile", tile=32, halo=4, scale=1.0, device="cpu")
    assert job.job_record["tile"] == 32 and job.job_record["halo"] == 4 and job.job_record["mode"] == "tile"
    resize = plan_prediction(pixel_run, spec, None, PredictSettings(tile=8, device="cpu"))
    assert resize.settings.tile is None and resize.outputs is None and len(resize.todo) == len(volume)


def test_call_arguments_are_checked_as_emfm_errors(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    out = tmp_path / "o.zarr"
    with pytest.raises(ConfigError, match="max_slices must be >= 0, got -1"):
        predict_volume(pixel_run, spec, out, max_slices=-1, progress=False)
    with pytest.raises(ConfigError, match="block_slices must be >= 1, got 0"):
        predict_volume_dask(pixel_run, spec, out, block_slices=0, progress=False)
    with pytest.raises(ConfigError, match="num_workers must be >= 1, got 0"):
        predict_volume_dask(pixel_run, spec, out, num_workers=0, progress=False)
    with pytest.raises(ConfigError, match="block_slices must be >= 1, got 0"):
        predict_dask_array(pixel_run, spec, block_slices=0)
    assert not out.exists()


def test_a_backbone_in_memory_is_refused_in_another_process(tmp_path, pixel_run, volume):
    """What a worker process meets when the driver's backbone object is not there: an emfm error."""
    from emfm.predict.distributed import _key, _predictor, clear_model_cache

    spec = write_input("tif", volume, tmp_path)
    job = plan_prediction(pixel_run, spec, None, PredictSettings(device="cpu"))
    clear_model_cache()
    with pytest.raises(EmfmError, match="a backbone passed in memory is only known to the process that created it"):
        _predictor(_key(job, PixelBackbone()), {"checkpoint": str(job.checkpoint), "settings": job.settings.to_dict()})
