"""``adabn``: only the head's BatchNorm statistics change, to the target's; the adapted run evaluates and predicts
like any run; a per-domain head keeps the target as its one domain; a head without BatchNorm is refused."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from emfm._io import safe_name
from emfm.adapt import adapt_run
from emfm.cli import main
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import load_checkpoint, read_info
from emfm.transforms import image_to_tensor, resized_shape
from tests.adapt.helpers import target_images, tensors

STATS = ("running_mean", "running_var", "num_batches_tracked")


def target_statistics(run, root):
    """The target's final-grid statistics as AdaBN defines them, computed here without emfm.adapt: the mean over
    slices of each slice's channel means and of its unbiased channel variances (a cumulative BatchNorm average),
    of the slices as the run's model sees them (after its input-side alignment, if it has one)."""
    segmenter, info = load_checkpoint(run / "checkpoint.safetensors")
    means, variances = [], []
    for img in info.make_alignment().standardise(list(target_images(root)), info.align_state):
        size = resized_shape(img.shape, info.resolution, info.patch_size)
        with torch.no_grad():
            grid = segmenter.backbone.encode(image_to_tensor(img, size, info.mean, info.std)[None]).patch_grid[0]
        means.append(grid.mean((1, 2)))
        variances.append(grid.flatten(1).var(1, unbiased=True))
    return torch.stack(means).mean(0), torch.stack(variances).mean(0)


def test_adabn_changes_only_batchnorm_statistics_to_the_targets(linear_run, target_dir, tmp_path):
    before = (linear_run / "checkpoint.safetensors").read_bytes()
    out = tmp_path / "adapted"
    record = adapt_run(linear_run, f"folder:{target_dir}", "adabn", out, progress=False)
    assert (linear_run / "checkpoint.safetensors").read_bytes() == before  # the source run is never written
    old, new = tensors(linear_run), tensors(out)
    assert old.keys() == new.keys()
    stats = {k for k in old if k.endswith(STATS)}
    assert stats == {f"head.norm.{s}" for s in STATS}
    for key in old.keys() - stats:
        assert torch.equal(old[key], new[key]), key
    mean, var = target_statistics(linear_run, target_dir)
    assert not torch.allclose(old["head.norm.running_mean"], mean, atol=1e-3)
    assert torch.allclose(new["head.norm.running_mean"], mean, atol=1e-5)
    assert torch.allclose(new["head.norm.running_var"], var, atol=1e-5)
    assert int(new["head.norm.num_batches_tracked"]) == 4
    assert record["method"] == "adabn" and record["steps"] == 4 and record["batchnorm_layers"] == 1
    assert record["summary"] == "the statistics of 1 BatchNorm layer re-estimated on 4 target slices"
    assert read_info(out / "checkpoint.safetensors") == read_info(linear_run / "checkpoint.safetensors")
    assert (out / "config.yaml").read_text() == (linear_run / "config.yaml").read_text()


def test_the_adapted_run_scores_through_evaluate_and_predicts_through_predict(linear_run, target_dir, tmp_path):
    out, name = tmp_path / "adapted", f"folder:{target_dir}"
    adapt_run(linear_run, name, "adabn", out, progress=False)
    scored = evaluate_run(out, test=[name], progress=False)  # this target happens to have masks: score it
    assert 0.0 <= scored["test"][name]["fg_iou"] <= 1.0 and scored["test"][name]["n_slices"] == 4
    volume = tmp_path / "target.tif"
    tifffile.imwrite(volume, target_images(target_dir), photometric="minisblack")
    masks = tmp_path / "masks.tif"
    assert main(["predict", "--run", str(out), "--input", str(volume), "--output", str(masks), "--batch-size", "1",
                 "--no-progress"]) == 0
    evaluated = tifffile.imread(out / "predictions" / f"{safe_name(name)}.tif")
    np.testing.assert_array_equal(tifffile.imread(masks), evaluated)


def test_a_domain_bn_run_keeps_the_target_as_its_one_domain(dbn_run, target_dir, tmp_path):
    out, name = tmp_path / "adapted", f"folder:{target_dir}"
    adapt_run(dbn_run, name, "adabn", out, progress=False)
    assert read_info(out / "checkpoint.safetensors").domains == (f"folder:{target_dir.resolve()}",)
    old, new = tensors(dbn_run), tensors(out)
    assert set(new) == {k for k in old if ".norms." not in k or ".norms.0." in k}
    for key in (k for k in new if ".norms." not in k):  # shared affine weights and the classifier
        assert torch.equal(old[key], new[key]), key
    mean, var = target_statistics(dbn_run, target_dir)
    assert torch.allclose(new["head.norm.norms.0.running_mean"], mean, atol=1e-5)
    assert torch.allclose(new["head.norm.norms.0.running_var"], var, atol=1e-5)
    # evaluate (the target is a domain of the run) and predict (an input of unknown origin) use the same statistics
    evaluate_run(out, test=[f"folder:{target_dir.resolve()}"], progress=False)
    volume, masks = tmp_path / "target.tif", tmp_path / "masks.tif"
    tifffile.imwrite(volume, target_images(target_dir), photometric="minisblack")
    assert main(["predict", "--run", str(out), "--input", str(volume), "--output", str(masks), "--batch-size", "1",
                 "--no-progress"]) == 0
    evaluated = tifffile.imread(out / "predictions" / f"{safe_name(f'folder:{target_dir.resolve()}')}.tif")
    np.testing.assert_array_equal(tifffile.imread(masks), evaluated)


def test_lora_runs_keep_their_adapter_tensors(lora_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    adapt_run(lora_run, f"folder:{target_dir}", "adabn", out, progress=False)
    old, new = tensors(lora_run), tensors(out)
    adapter = [k for k in old if k.startswith("adapter.")]
    assert adapter and all(torch.equal(old[k], new[k]) for k in adapter)
    assert not torch.equal(old["head.norm.running_mean"], new["head.norm.running_mean"])


def test_a_head_without_batchnorm_is_refused_and_nothing_is_written(unet_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    with pytest.raises(ConfigError, match="has no BatchNorm layer; use --method self-training"):
        adapt_run(unet_run, f"folder:{target_dir}", "adabn", out, progress=False)
    assert not out.exists()


def test_a_run_with_input_standardisation_adapts_on_the_standardised_target(volnorm_run, target_dir, tmp_path):
    out = tmp_path / "adapted"
    adapt_run(volnorm_run, f"folder:{target_dir}", "adabn", out, progress=False)
    mean, var = target_statistics(volnorm_run, target_dir)
    new = tensors(out)
    assert torch.allclose(new["head.norm.running_mean"], mean, atol=1e-5)
    assert torch.allclose(new["head.norm.running_var"], var, atol=1e-5)
    segmenter, info = load_checkpoint(volnorm_run / "checkpoint.safetensors")
    with torch.no_grad():  # the raw slices' statistics are another thing: the standardisation took effect
        raw = [segmenter.backbone.encode(image_to_tensor(img, resized_shape(img.shape, info.resolution, 14))[None])
               for img in target_images(target_dir)]
    raw_mean = torch.stack([o.patch_grid[0].mean((1, 2)) for o in raw]).mean(0)
    assert not torch.allclose(new["head.norm.running_mean"], raw_mean, atol=1e-3)
