"""A trained run predicts a volume through its saved masks with the IoU its own evaluation reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emfm.config import TrainConfig
from emfm.data import load_split
from emfm.predict import PredictSettings, predict_volume, predict_volume_dask
from emfm.train.run import train_run
from tests.helpers import write_folder_dataset
from tests.predict.helpers import read_output

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def pooled_iou(pred: np.ndarray, truth: list[np.ndarray]) -> float:
    inter = union = 0
    for p, t in zip(pred, truth):
        p, t = p.astype(bool), t.astype(bool)
        inter += int(np.logical_and(p, t).sum())
        union += int(np.logical_or(p, t).sum())
    return inter / union


@pytest.mark.parametrize("adapter", ["frozen", "lora"])
def test_saved_masks_reproduce_the_runs_own_test_iou(tmp_path, tiny_vit_dir, adapter):
    name = write_folder_dataset(tmp_path / "data", n_train=6, n_test=5, shape=(40, 56), seed=3)
    config = TrainConfig(backbone=str(tiny_vit_dir), train=name, adapter=adapter, epochs=2, resolution=56,
                         lr=1e-2, cache_dir=str(tmp_path / "cache"))
    run = tmp_path / "run"
    metrics = train_run(config, run, progress=False)
    reported = json.loads((run / "metrics.json").read_text())["test"][name]["fg_iou"]
    assert reported == metrics["test"][name]["fg_iou"] and 0 < reported < 1

    test = load_split(name, "test", progress=False)
    out = tmp_path / "pred.zarr"
    predict_volume(run, str(tmp_path / "data" / "test" / "images"), out, PredictSettings(batch_size=3), progress=False)
    pred = read_output(out)
    assert pred.shape == (5, 40, 56)
    assert pooled_iou(pred, test.masks) == pytest.approx(reported, abs=1e-6)
    evaluated = load_split(name, "test", progress=False)  # the run's own saved predictions agree too
    import tifffile

    saved = tifffile.imread(next((run / "predictions").glob("*.tif")))
    np.testing.assert_array_equal(pred, saved)
    assert pooled_iou(saved, evaluated.masks) == pytest.approx(reported, abs=1e-12)

    dask_out = tmp_path / "pred_dask.ome.zarr"
    predict_volume_dask(run, str(tmp_path / "data" / "test" / "images"), dask_out, block_slices=2,
                        scheduler="synchronous", progress=False)
    np.testing.assert_array_equal(read_output(dask_out), pred)


@pytest.mark.parametrize("adapter,head", [("frozen", "fusion"), ("lora", "multilinear")])
def test_a_tiled_multi_block_run_segments_a_volume_exactly_as_it_was_scored(tmp_path, tiny_vit_dir, adapter, head):
    """Native-scale tiles, several blocks, a pixel head, crops: predict reproduces the run's own IoU."""
    name = write_folder_dataset(tmp_path / "data", n_train=6, n_test=4, shape=(40, 56), seed=5)
    config = TrainConfig.from_dict({
        "backbone": str(tiny_vit_dir), "train": name, "adapter": adapter, "head": head, "layers": [0, 1],
        "scale": 1.0, "tile": 28, "tile_overlap": 14, "crop": 28, "crops_per_epoch": 6, "epochs": 2,
        "lr": 1e-2, "min_steps": 0, "cache_dir": str(tmp_path / "cache"),
    })
    run = tmp_path / "run"
    metrics = train_run(config, run, progress=False)
    out = tmp_path / "pred.zarr"
    predict_volume(run, str(tmp_path / "data" / "test" / "images"), out, PredictSettings(batch_size=1), progress=False)
    test = load_split(name, "test", progress=False)
    assert pooled_iou(read_output(out), test.masks) == pytest.approx(metrics["test"][name]["fg_iou"], abs=1e-6)


def test_tile_mode_scale_comes_from_the_training_data(tmp_path, tiny_vit_dir):
    name = write_folder_dataset(tmp_path / "data", n_train=4, n_test=2, shape=(40, 56), seed=4)
    config = TrainConfig(backbone=str(tiny_vit_dir), train=name, epochs=1, resolution=56,
                         cache_dir=str(tmp_path / "cache"))
    run = tmp_path / "run"
    train_run(config, run, progress=False)
    result = predict_volume(run, str(tmp_path / "data" / "test" / "images"), tmp_path / "t.zarr",
                            PredictSettings(mode="tile", tile=28), progress=False)
    # Training slices are 40 x 56 at resolution 56: one network pixel per input pixel.
    assert result["scale"] == pytest.approx(1.0) and result["halo"] == 3
    assert read_output(tmp_path / "t.zarr").shape == (2, 40, 56)


def test_tiled_vit_probabilities_show_no_seams(tmp_path, vit_run):
    """Real (random) ViT: tiles see different context, yet blended probabilities are continuous."""
    from emfm.predict.tiling import tile_starts
    from tests.predict.helpers import read_any, synthetic_volume, write_input

    vol = synthetic_volume(n=1, shape=(56, 200), seed=5)
    spec = write_input("zarr", vol, tmp_path)
    tile, halo = 56, 14

    def probs(h: int) -> np.ndarray:
        out = tmp_path / f"h{h}.zarr"
        predict_volume(vit_run, spec, out, PredictSettings(mode="tile", tile=tile, halo=h, scale=1.0),
                       probabilities=tmp_path / f"p{h}.zarr", progress=False)
        return read_any(tmp_path / f"p{h}.zarr")[0].astype(np.float64)

    def jumps_at_edges(p: np.ndarray, h: int) -> np.ndarray:
        """Mean absolute step between the two columns on either side of each tile edge."""
        starts, pad, _ = tile_starts(p.shape[1], tile, h)
        edges = {s - pad for s in starts[1:]} | {s + tile - pad for s in starts[:-1]}
        return np.array([np.abs(p[:, c] - p[:, c - 1]).mean() for c in sorted(edges) if 0 < c < p.shape[1]])

    def typical(p: np.ndarray) -> float:
        return float(np.median(np.abs(np.diff(p, axis=1)).mean(0)))

    hard, blended = probs(0), probs(halo)
    # Hard tiles leave steps at their edges, well above the slice's typical neighbour difference
    # (about 3.5 times here)...
    assert jumps_at_edges(hard, 0).mean() > 2.5 * typical(hard)
    # ...blended tiles do not: no edge column steps more than a typical column (at most 1.4 times here).
    assert jumps_at_edges(blended, halo).max() < 2.0 * typical(blended)


@pytest.mark.slow
def test_lucchi_run_predicts_its_test_volume_with_the_reported_iou(tmp_path):
    """Real data and weights: a quick frozen run on Lucchi++, then predict Test_In as a volume."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    weights = SHARED / "weights" / "dinov2-vits14-imgfocus"
    config = TrainConfig(backbone=str(weights), train="lucchi_pp", epochs=2, resolution=224, max_train_slices=16,
                         data_root=str(SHARED / "data"), cache_dir=str(tmp_path / "cache"), lr=1e-3)
    run = tmp_path / "run"
    train_run(config, run, progress=False)
    reported = json.loads((run / "metrics.json").read_text())["test"]["lucchi_pp"]["fg_iou"]
    out = tmp_path / "lucchi.zarr"
    predict_volume(run, str(SHARED / "data" / "lucchi_pp" / "Test_In"), out, progress=False)
    truth = load_split("lucchi_pp", "test", SHARED / "data" / "lucchi_pp", progress=False).masks
    assert pooled_iou(read_output(out), truth) == pytest.approx(reported, abs=1e-6)
