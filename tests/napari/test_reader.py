"""emfm.napari.reader: emfm predict's outputs and a run's predictions open as Labels and Image layers."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.napari.reader import get_reader


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None, f"{path} was not recognised"
    (data, meta, kind), = reader(str(path))
    return np.asarray(data), meta, kind


@pytest.mark.parametrize("suffix", [".zarr", ".ome.zarr", ".tif"])
def test_emfm_predict_outputs_open_as_mask_labels_and_probability_image(run_a, stack, tmp_path, suffix):
    import tifffile

    from emfm.predict import PredictSettings, predict_volume

    tifffile.imwrite(tmp_path / "em.tif", stack, photometric="minisblack")
    out, prob = tmp_path / f"mito{suffix}", tmp_path / f"mito_p{suffix}"
    predict_volume(run_a, tmp_path / "em.tif", out, PredictSettings(device="cpu"), probabilities=prob, progress=False)
    from tests.predict.helpers import read_any

    mask, meta, kind = _read(out)
    assert kind == "labels" and meta["name"] == "mito"
    np.testing.assert_array_equal(mask, read_any(out))
    p, meta, kind = _read(prob)
    assert kind == "image" and meta["name"] == "mito_p" and meta["contrast_limits"] == (0.0, 1.0)
    assert p.dtype == np.float16 and p.shape == stack.shape


def test_a_runs_predictions_tif_is_named_after_the_run(tmp_path):
    import tifffile

    where = tmp_path / "dinov2_lora" / "predictions"
    where.mkdir(parents=True)
    masks = (np.arange(2 * 8 * 8).reshape(2, 8, 8) % 3 == 0).astype(np.uint8)
    tifffile.imwrite(where / "lucchi_pp.tif", masks, compression="zlib", photometric="minisblack")
    data, meta, kind = _read(where / "lucchi_pp.tif")
    assert kind == "labels" and meta["name"] == "dinov2_lora lucchi_pp"
    np.testing.assert_array_equal(data, masks)


def test_what_is_not_ours_is_left_to_other_readers(tmp_path, stack):
    import tifffile
    import zarr

    tifffile.imwrite(tmp_path / "em.tif", stack, photometric="minisblack")  # an EM image: many grey values
    zarr.create_array(str(tmp_path / "raw.zarr"), data=stack)  # a zarr array without emfm's record
    (tmp_path / "notes.txt").write_text("x")
    for path in ("em.tif", "raw.zarr", "notes.txt", "missing.tif"):
        assert get_reader(str(tmp_path / path)) is None, path
    assert get_reader([str(tmp_path / "em.tif"), str(tmp_path / "raw.zarr")]) is None
