"""predict_volume with a pixel-wise model: every input and output format, tiling, resuming, errors."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.errors import ConfigError, DataError, RunDirError
from emfm.predict import OutputExistsError, PredictSettings, predict_volume
from tests.predict.helpers import PixelBackbone, make_pixel_run, read_any, read_output, reference_masks, write_input

INPUTS = ["tif", "png", "webp", "tif-slices", "zarr", "ome-zarr", "h5"]


@pytest.mark.parametrize("kind", INPUTS)
def test_every_input_format_gives_the_evaluation_masks(tmp_path, pixel_run, volume, kind):
    spec = write_input(kind, volume, tmp_path)
    out = tmp_path / "pred.zarr"
    result = predict_volume(pixel_run, spec, out, PredictSettings(batch_size=2), backbone=PixelBackbone(),
                            progress=False)
    expected, _ = reference_masks(pixel_run, volume)
    got = read_output(out)
    assert got.shape == volume.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.mean() < 1  # both classes occur, so the comparison means something
    assert result["complete"] and result["computed"] == len(volume) and result["skipped"] == 0


@pytest.mark.parametrize("ext", [".zarr", ".ome.zarr", ".tif"])
@pytest.mark.parametrize("pdtype", ["float16", "uint8"])
def test_every_output_format_with_probabilities(tmp_path, pixel_run, volume, ext, pdtype):
    spec = write_input("zarr", volume, tmp_path)
    out, prob = tmp_path / f"pred{ext}", tmp_path / f"prob{ext}"
    result = predict_volume(pixel_run, spec, out, PredictSettings(probability_dtype=pdtype), probabilities=prob,
                            backbone=PixelBackbone(), progress=False)
    masks, p_ref = reference_masks(pixel_run, volume)
    np.testing.assert_array_equal(read_output(out), masks)
    p = read_any(prob)
    assert p.dtype == np.dtype(pdtype) and p.shape == volume.shape
    if pdtype == "float16":
        np.testing.assert_allclose(p.astype(np.float32), p_ref, atol=1e-3)
    else:
        np.testing.assert_array_equal(p, np.rint(p_ref * 255).astype(np.uint8))
    assert result["probabilities"] == str(prob) and result["probability_dtype"] == pdtype


def test_ome_zarr_input_pixel_size_is_carried_to_ome_zarr_output(tmp_path, pixel_run, volume):
    import json

    spec = write_input("ome-zarr", volume, tmp_path)
    out = tmp_path / "pred.ome.zarr"
    predict_volume(pixel_run, spec, out, backbone=PixelBackbone(), progress=False)
    ms = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 5.0, 5.0]
    assert ms["axes"][0]["unit"] == "nanometer"


def test_tiled_equals_whole_slice_for_a_translation_equivariant_model(tmp_path, volume):
    # resolution 32 = the slices' long side and patch 1: resize mode sees the slice at its own size,
    # so tiling at scale 1 must give the same logits (pixel-wise model) and the same masks.
    run = make_pixel_run(tmp_path / "run", resolution=32)
    spec = write_input("tif", volume, tmp_path)
    predict_volume(run, spec, tmp_path / "whole.zarr", probabilities=tmp_path / "pw.zarr",
                   backbone=PixelBackbone(), progress=False)
    tiled = PredictSettings(mode="tile", tile=10, halo=3, scale=1.0)
    result = predict_volume(run, spec, tmp_path / "tiled.zarr", tiled, probabilities=tmp_path / "pt.zarr",
                            backbone=PixelBackbone(), progress=False)
    assert (result["tile"], result["halo"], result["scale"]) == (10, 3, 1.0)
    np.testing.assert_array_equal(read_output(tmp_path / "tiled.zarr"), read_output(tmp_path / "whole.zarr"))
    np.testing.assert_allclose(read_any(tmp_path / "pt.zarr").astype(np.float32),
                               read_any(tmp_path / "pw.zarr").astype(np.float32), atol=1e-3)


def test_tile_mode_scale_changes_the_network_size(tmp_path, volume):
    run = make_pixel_run(tmp_path / "run", resolution=32)
    spec = write_input("tif", volume, tmp_path)
    bb = PixelBackbone()
    # At scale 0.5 a 24 x 32 slice becomes 12 x 16: with tile 8 and halo 2 the padded 16 x 20 grid
    # needs 3 x 3 tiles of 8 x 8 per slice.
    tiled = PredictSettings(mode="tile", tile=8, halo=2, scale=0.5, batch_size=4)
    predict_volume(run, spec, tmp_path / "t.zarr", tiled, backbone=bb, progress=False)
    assert bb.images_seen == len(volume) * 9
    assert read_output(tmp_path / "t.zarr").shape == volume.shape


def test_resume_computes_only_the_missing_slices(tmp_path, volume):
    run = make_pixel_run(tmp_path / "run", resolution=32)
    spec = write_input("zarr", volume, tmp_path)
    full = tmp_path / "full.tif"
    predict_volume(run, spec, full, probabilities=tmp_path / "pf.tif", backbone=PixelBackbone(), progress=False)

    out, prob = tmp_path / "part.tif", tmp_path / "pp.tif"
    one = PredictSettings(batch_size=1)
    first = predict_volume(run, spec, out, one, probabilities=prob, max_slices=2, backbone=PixelBackbone(),
                           progress=False)
    assert first["computed_slices"] == [0, 1] and not first["complete"]
    assert not out.exists() and (tmp_path / "part.tif.partial.zarr").is_dir()
    bb = PixelBackbone()
    second = predict_volume(run, spec, out, one, probabilities=prob, backbone=bb, progress=False)
    assert second["resumed"] and second["skipped"] == 2 and second["computed_slices"] == [2, 3, 4]
    assert bb.images_seen == 3  # the model saw only the missing slices
    assert second["complete"] and out.is_file() and not (tmp_path / "part.tif.partial.zarr").exists()
    np.testing.assert_array_equal(read_any(out), read_any(full))
    np.testing.assert_array_equal(read_any(prob), read_any(tmp_path / "pf.tif"))
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        predict_volume(run, spec, out, probabilities=prob, backbone=PixelBackbone(), progress=False)


def test_resume_with_other_settings_is_refused(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    out = tmp_path / "p.zarr"
    predict_volume(pixel_run, spec, out, max_slices=1, backbone=PixelBackbone(), progress=False)
    tiled = PredictSettings(mode="tile", scale=1.0, tile=8, halo=1)
    with pytest.raises(OutputExistsError, match=r"partial prediction of another job \(.*mode: 'resize' != 'tile'"):
        predict_volume(pixel_run, spec, out, tiled, backbone=PixelBackbone(), progress=False)
    done = predict_volume(pixel_run, spec, out, tiled, overwrite=True, backbone=PixelBackbone(), progress=False)
    assert done["complete"] and done["computed"] == len(volume) and not done["resumed"]


def test_bf16_autocast_runs_and_mostly_agrees(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    result = predict_volume(pixel_run, spec, tmp_path / "b.zarr", PredictSettings(bf16=True),
                            backbone=PixelBackbone(), progress=False)
    expected, _ = reference_masks(pixel_run, volume)
    assert result["bf16"] is True
    assert (read_output(tmp_path / "b.zarr") == expected).mean() > 0.97


# -- errors, each by its text --------------------------------------------------------------------------


def test_run_without_checkpoint(tmp_path, volume):
    spec = write_input("tif", volume, tmp_path)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(RunDirError, match="empty_run has no checkpoint.safetensors: it is not a trained run"):
        predict_volume(tmp_path / "empty_run", spec, tmp_path / "o.zarr", progress=False)
    with pytest.raises(RunDirError, match="run directory .*nowhere does not exist"):
        predict_volume(tmp_path / "nowhere", spec, tmp_path / "o.zarr", progress=False)


@pytest.mark.parametrize(
    "data,match",
    [
        (np.zeros((3, 8, 8), np.float32), "pixel type float32 is not supported"),
        (np.zeros((3, 8, 8), np.int32), "pixel type int32 is not supported"),
        (np.zeros((2, 3, 8, 8), np.uint8), r"array of shape \(2, 3, 8, 8\) is not a grey \(Z, Y, X\) volume"),
        (np.zeros((8,), np.uint8), r"array of shape \(8,\) is not a grey \(Z, Y, X\) volume"),
    ],
)
def test_inputs_the_run_cannot_take(tmp_path, pixel_run, data, match):
    import zarr

    zarr.create_array(str(tmp_path / "bad.zarr"), data=data)
    with pytest.raises(DataError, match=match):
        predict_volume(pixel_run, str(tmp_path / "bad.zarr"), tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists()


def test_output_errors(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown output extension '.npy'"):
        predict_volume(pixel_run, spec, tmp_path / "o.npy", progress=False)
    with pytest.raises(ConfigError, match="is the input itself"):
        predict_volume(pixel_run, spec, spec, progress=False)
    (tmp_path / "taken.tif").write_bytes(b"not mine")
    with pytest.raises(OutputExistsError, match="taken.tif already exists; pass --overwrite"):
        predict_volume(pixel_run, spec, tmp_path / "taken.tif", progress=False)
    assert (tmp_path / "taken.tif").read_bytes() == b"not mine"


def test_not_enough_disk_is_refused_before_writing(tmp_path, pixel_run, volume, monkeypatch):
    import shutil
    from collections import namedtuple

    from emfm.predict import DiskSpaceError

    spec = write_input("tif", volume, tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 100, 100))
    with pytest.raises(DiskSpaceError, match=r"not enough disk space .* only 0.00 GB is free"):
        predict_volume(pixel_run, spec, tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists()


def test_tile_mode_without_scale_needs_the_training_data(tmp_path, pixel_run, volume):
    spec = write_input("tif", volume, tmp_path)
    with pytest.raises(ConfigError, match=r"cannot tell the pixel size run .* was trained at .* pass --scale S"):
        predict_volume(pixel_run, spec, tmp_path / "o.zarr", PredictSettings(mode="tile"), progress=False)


@pytest.mark.parametrize("intensity", ["dtype", "minmax"])
def test_prediction_and_evaluation_feed_the_model_the_protocols_pixels(tmp_path, intensity):
    """Both go through ModelInfo.preprocessing, which is the protocol's resize and normalisation."""
    import dataclasses

    import torch

    from emfm.evaluate.inference import slice_logits
    from emfm.models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from emfm.predict import SlicePredictor
    from emfm.transforms import image_to_tensor, logits_to_size, resized_shape

    run = make_pixel_run(tmp_path / "run", resolution=20)  # 24 x 32 slices are shrunk to 15 x 20
    segmenter, info = load_checkpoint(run / CHECKPOINT_NAME, backbone=PixelBackbone())
    info = dataclasses.replace(info, intensity=intensity)
    img = (np.random.default_rng(1).integers(0, 4000, size=(24, 32))).astype(np.uint16)
    protocol = image_to_tensor(img, resized_shape(img.shape, 20, 1), info.mean, info.std, intensity=intensity)
    with torch.inference_mode():
        expected = segmenter(protocol[None]).float()
    got = slice_logits(segmenter, img, info.preprocessing)
    assert got.shape[-2:] == (15, 20)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    predictor = SlicePredictor(segmenter, info, PredictSettings(batch_size=1, device="cpu"))
    torch.testing.assert_close(predictor.native_logits([img])[0], logits_to_size(expected, img.shape), rtol=0, atol=0)
