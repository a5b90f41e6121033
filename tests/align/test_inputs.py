"""Input-side alignment (volume-norm, histogram-match, fda) on two tiny synthetic sets with a deliberate
intensity shift (one bright, one dark and flat): each method does what it claims to the pixels, and a run
trained with it sees the same standardised slices in training, after reloading, and in prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.ndimage import gaussian_filter

from emfm._io import safe_name
from emfm.align import create_alignment
from emfm.align.inputs import (
    LEVELS,
    centred_amplitude,
    low_window,
    resample_window,
    sample_indices,
    standardise_stacks,
    volume_sample,
)
from emfm.config import TrainConfig
from emfm.data import load_split
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run, evaluate_segmenter
from emfm.models.checkpoint import load_checkpoint, read_info
from emfm.train.run import load_stacks, train_run
from tests.helpers import synthetic_slice, write_folder_dataset

METHODS = ("volume-norm", "histogram-match", "fda")


def bright_volume(n: int = 6, shape=(48, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(synthetic_slice(rng, shape)[0].astype(float) * 1.1 + 30, 0, 255).astype(np.uint8)
            for _ in range(n)]


def darken(image: np.ndarray) -> np.ndarray:
    """The shifted domain: dark and of low contrast."""
    return (image.astype(float) * 0.3 + 10).astype(np.uint8)


def dark_volume(n: int = 6, shape=(40, 56), seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [darken(synthetic_slice(rng, shape)[0]) for _ in range(n)]


def quantile_gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference of the two volumes' grey-value quantiles (0-255 scale)."""
    qa = np.quantile(np.concatenate([x.ravel() for x in a]).astype(float), LEVELS)
    qb = np.quantile(np.concatenate([x.ravel() for x in b]).astype(float), LEVELS)
    return float(np.abs(qa - qb).mean())


@pytest.mark.parametrize("name", METHODS)
def test_output_is_uint8_deterministic_and_independent_of_the_other_sets(name):
    bright, dark = bright_volume(), dark_volume()
    method = create_alignment(name, {} if name == "volume-norm" else {"reference": "bright"})
    assert method.input_side
    state = method.fit_inputs({"bright": bright, "dark": dark})
    out = method.standardise(dark, state)
    assert all(o.dtype == np.uint8 and o.shape == d.shape for o, d in zip(out, dark))
    again = create_alignment(name, method.settings_dict()).standardise(dark, state)
    assert all(np.array_equal(x, y) for x, y in zip(out, again))
    third = [np.full((40, 40), 250, np.uint16)]  # another set in the run changes nothing
    assert method.fit_inputs({"third": third, "bright": bright, "dark": dark}) == state
    assert not all(np.array_equal(o, d) for o, d in zip(out, dark))  # the pixels did change
    uint16 = method.standardise([d.astype(np.uint16) * 257 for d in dark], state)  # the dtype's range
    assert all(u.dtype == np.uint8 for u in uint16)
    assert max(int(np.abs(u.astype(int) - o).max()) for u, o in zip(uint16, out)) <= 1


def test_volume_norm_uses_the_volumes_statistics_not_each_slices():
    volume = bright_volume(n=7)
    volume[3] = (volume[3] * 0.5).astype(np.uint8)  # one darker slice in a bright volume
    method = create_alignment("volume-norm")
    out = method.standardise(volume, {})
    means = [float(o.mean()) for o in out]
    assert means[3] < min(means[2], means[4]) - 20
    low, high = np.percentile(np.concatenate([v.ravel() for v in volume]), [1, 99])
    expected = np.clip((volume[0].astype(float) - low) / (high - low), 0, 1) * 255
    assert np.abs(out[0].astype(float) - expected).max() <= 2  # the whole volume's 1st..99th percentiles
    z = create_alignment("volume-norm", {"mode": "zscore", "clip": 2}).standardise(volume, {})
    flat = np.concatenate([v.ravel() for v in volume]).astype(float)
    expected = (np.clip((volume[3] - flat.mean()) / flat.std(), -2, 2) + 2) / 4 * 255  # +-2 sigma to 0..255
    assert np.abs(z[3].astype(float) - expected).max() <= 1 and z[3].min() == 0


def test_statistics_come_from_evenly_spaced_slices_of_a_long_volume():
    assert sample_indices(5) == [0, 1, 2, 3, 4]
    picked = sample_indices(100)
    assert len(picked) == 32 and picked[0] == 0 and picked[-1] == 99
    assert max(np.diff(picked)) - min(np.diff(picked)) <= 1
    volume = [np.full((4, 4), z % 256, np.uint8) for z in range(100)]
    assert [int(v[0, 0]) for v in volume_sample(volume)] == picked


def test_histogram_match_brings_the_dark_sets_histogram_to_the_references():
    bright, dark = bright_volume(), dark_volume()
    method = create_alignment("histogram-match")
    state = method.fit_inputs({"bright": bright, "dark": dark})  # reference: the first set
    assert state["reference"] == "bright" and len(state["quantiles"]) == 256
    assert all(0.0 <= q <= 1.0 for q in state["quantiles"]) and state["quantiles"] == sorted(state["quantiles"])
    before = quantile_gap(dark, bright)
    after = quantile_gap(method.standardise(dark, state), bright)
    assert before > 60 and after < 4
    # monotone: a brighter input pixel is never darker in the output
    out = method.standardise(dark, state)
    order = np.argsort(dark[0].ravel(), kind="stable")
    assert (np.diff(out[0].ravel()[order].astype(int)) >= 0).all()


def test_fda_keeps_the_phase_and_takes_the_references_low_frequency_amplitude():
    bright, dark = bright_volume(shape=(96, 96)), dark_volume(shape=(80, 96))
    method = create_alignment("fda", {"beta": 0.05, "reference": "bright"})
    state = method.fit_inputs({"dark": dark, "bright": bright})
    reference = np.asarray(state["amplitude"])
    assert state["reference"] == "bright" and reference.shape == (9, 9)  # half-size floor(0.05 * 96) = 4
    out = method.standardise(dark, state)
    half = 4  # floor(0.05 * 80)
    target = resample_window(reference, half)
    for d, o in zip(dark, out):
        hp_in = d - gaussian_filter(d.astype(float), 3)
        hp_out = o - gaussian_filter(o.astype(float), 3)
        assert np.corrcoef(hp_in.ravel(), hp_out.ravel())[0, 1] > 0.9  # the structures stay where they were
        before = low_window(centred_amplitude(d / 255.0), half)
        after = low_window(centred_amplitude(o / 255.0), half)
        assert np.abs(after - target).mean() < 0.2 * np.abs(before - target).mean()
    assert abs(np.mean(out) - np.mean(bright)) < 5 < abs(np.mean(dark) - np.mean(bright))


def test_resampling_a_window_keeps_its_zero_frequency_and_symmetry():
    k = np.arange(-3, 4, dtype=float)
    window = 10 + k[:, None] ** 2 + k[None, :] ** 2  # symmetric, as an amplitude spectrum is
    window[3, 3] = 1000.0
    small = resample_window(window, 1)  # corners align: frequency -3, 0, 3 of the source per axis
    assert small.shape == (3, 3) and small[1, 1] == 1000.0
    assert small[0, 0] == 28.0 and small[0, 1] == small[1, 2] == 19.0  # the mean did not bleed into them
    assert np.allclose(small, small[::-1, ::-1])
    assert np.allclose(resample_window(window, 3), window)
    assert resample_window(window, 0).tolist() == [[1000.0]]


@pytest.mark.parametrize("name,settings,message", [
    ("volume-norm", {"mode": "minmax"}, "unknown mode 'minmax'"),
    ("volume-norm", {"low": 99, "high": 1}, "low 99 must be below high 1 \\(percentiles"),
    ("volume-norm", {"clip": 0}, "clip must be > 0"),
    ("volume-norm", {"lwo": 2}, "unknown align_settings key 'lwo' \\(did you mean 'low'\\?\\)"),
    ("fda", {"beta": 0}, "beta must be > 0"),
    ("fda", {"beta": 0.5}, "beta must be > 0 and <= 0.25"),
    ("histogram-match", {"reference": 3}, "reference must be a string"),
])
def test_bad_settings_are_config_errors(name, settings, message):
    with pytest.raises(ConfigError, match=message):
        create_alignment(name, settings)


def test_a_reference_that_is_not_a_training_set_is_refused():
    with pytest.raises(ConfigError, match="align reference 'c' is not a training set; use one of a, b"):
        TrainConfig.from_dict({"backbone": "x", "train": "a,b", "align": "fda", "align_settings": {"reference": "c"}})
    with pytest.raises(ConfigError, match="not a training set"):
        create_alignment("histogram-match", {"reference": "c"}).fit_inputs({"a": bright_volume()})


# --------------------------------------------------------------------------------------------------
# End to end: train -> reload -> evaluate -> predict
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> tuple[str, str]:
    """Two folder sets: ``a`` as synthesised, ``b`` darkened (its images only; masks as they were)."""
    base = tmp_path_factory.mktemp("shifted")
    a = write_folder_dataset(base / "a", n_train=6, n_test=3, shape=(40, 56), seed=1)
    b = write_folder_dataset(base / "b", n_train=6, n_test=3, shape=(48, 48), seed=2)
    for path in (base / "b").glob("*/images/*.png"):
        Image.fromarray(darken(np.asarray(Image.open(path)))).save(path)
    return a, b


def joint(backbone, a, b, cache, align) -> TrainConfig:
    return TrainConfig.from_dict({
        "backbone": str(backbone), "train": [a, b], "test": [a, b], "cache_dir": str(cache), "epochs": 2,
        "resolution": 56, "lr": 1e-2, "min_steps": 0, "batch_size": 2, "align": align,
    })


@pytest.fixture(scope="module")
def runs(tiny_backbone_dir, shifted, tmp_path_factory) -> dict[str, tuple[Path, dict, TrainConfig]]:
    a, b = shifted
    base = tmp_path_factory.mktemp("input_runs")
    out = {}
    for name in METHODS:
        config = joint(tiny_backbone_dir, a, b, base / "cache", name)
        metrics = train_run(config, base / name, progress=False)
        predictions = {n: tifffile.imread(base / name / "predictions" / f"{safe_name(n)}.tif") for n in (a, b)}
        out[name] = (base / name, metrics, config, predictions)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_a_reloaded_run_scores_as_training_did_and_keeps_its_state(name, runs, shifted):
    a, b = shifted
    run, metrics, config, predictions = runs[name]
    assert metrics["run"]["align"] == name
    state = read_info(run / "checkpoint.safetensors").align_state
    assert state == load_stacks(config, progress=False).align_state  # the fitted state, through the checkpoint
    if name != "volume-norm":
        assert state["reference"] == a
    again = evaluate_run(run, progress=False)
    for n in (a, b):
        assert again["test"][n]["fg_iou"] == metrics["test"][n]["fg_iou"]
        assert np.array_equal(tifffile.imread(run / "predictions" / f"{safe_name(n)}.tif"), predictions[n])


def test_training_and_evaluation_see_standardised_slices(runs, shifted, tmp_path):
    """The control that makes the test above able to fail: raw slices give other predictions."""
    a, b = shifted
    run, _, config, predictions = runs["histogram-match"]
    data = load_stacks(config, progress=False)
    raw = load_split(b, "test", progress=False)
    assert all(s.dtype == np.uint8 for s in data.test[b].images)
    assert float(np.mean(data.test[b].images)) > float(np.mean(raw.images)) + 40  # b brought up to a
    assert all(np.array_equal(x, y) for x, y in zip(data.test[b].masks, raw.masks)) and data.test[b].ids == raw.ids
    tr, va = data.train[b]
    splits = [load_split(b, s, progress=False) for s in ("train", "val")]
    joined = standardise_stacks(create_alignment("histogram-match"), splits, data.align_state)
    assert all(np.array_equal(x, y) for x, y in zip(tr.images + va.images, joined[0].images + joined[1].images))
    segmenter, info = load_checkpoint(run / "checkpoint.safetensors")
    unstandardised = evaluate_segmenter(segmenter, info, {b: raw}, tmp_path, progress=False)
    assert not np.array_equal(tifffile.imread(tmp_path / "predictions" / f"{safe_name(b)}.tif"), predictions[b])
    assert unstandardised["test"][b]["n_slices"] == 3


@pytest.mark.parametrize("name", ["histogram-match", "fda"])
def test_predict_gives_the_masks_evaluation_gave(name, runs, shifted, tmp_path):
    from emfm.predict import PredictSettings, predict_volume, predict_volume_dask

    _, b = shifted
    run, _, _, predictions = runs[name]
    volume = Path(b.split(":", 1)[1]) / "test" / "images"
    settings = PredictSettings(batch_size=1, device="cpu")
    predict_volume(run, volume, tmp_path / "masks.tif", settings, progress=False)
    assert np.array_equal(tifffile.imread(tmp_path / "masks.tif"), predictions[b])
    predict_volume_dask(run, volume, tmp_path / "dask.tif", settings, block_slices=2, scheduler="synchronous",
                        progress=False)
    assert np.array_equal(tifffile.imread(tmp_path / "dask.tif"), predictions[b])


def test_export_refuses_a_run_with_an_input_side_alignment(runs, tmp_path):
    from emfm.export import export_run

    run = runs["volume-norm"][0]
    with pytest.raises(ConfigError, match="standardises every volume with --align volume-norm"):
        export_run(run, tmp_path / "m.onnx", "onnx", license="MIT")
    assert not (tmp_path / "m.onnx").exists()
