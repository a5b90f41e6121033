"""Feature alignment (CORAL, MMD): the distances measure what they claim, the term reaches the training
loss through the head's feature layer, and each method trains, reloads and scores the same."""

from __future__ import annotations

import pytest
import torch

from emfm.align import create_alignment
from emfm.align.feature_align import coral_distance, mmd_distance, subsample_rows
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.heads import create_head
from emfm.models.segmenter import Segmenter
from emfm.train.module import SegmentationModule
from emfm.train.run import train_run


def test_coral_is_zero_for_equal_covariances_and_grows_with_their_difference():
    torch.manual_seed(0)
    x = torch.randn(4000, 6)
    same = coral_distance(x, torch.randn(4000, 6) + 3.0)  # a mean shift alone: CORAL ignores it
    wider = coral_distance(x, 2 * torch.randn(4000, 6))
    widest = coral_distance(x, 4 * torch.randn(4000, 6))
    assert same < 0.01 < wider < widest
    # |C_a - C_b|_F^2 / (4 d^2) with C_b = 4 I - I = 3 I: 6 * 9 / (4 * 36)
    assert float(wider) == pytest.approx(6 * 9 / (4 * 36), rel=0.1)


def test_mmd_sees_a_mean_shift_and_is_near_zero_for_one_distribution():
    torch.manual_seed(0)
    a, b = torch.randn(500, 4), torch.randn(500, 4)
    assert mmd_distance(a, b) < 0.02
    assert mmd_distance(a, b + 1.0) > 10 * mmd_distance(a, b)
    assert mmd_distance(a, b + 2.0) > mmd_distance(a, b + 1.0)


def test_subsampling_keeps_rows_and_caps_their_number():
    rows = torch.arange(40.0).reshape(20, 2)
    picked = subsample_rows(rows, 5)
    assert picked.shape == (5, 2) and all(any(torch.equal(p, r) for r in rows) for p in picked)
    assert subsample_rows(rows, 50) is rows


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        create_alignment("coral", {"weight": -1})
    with pytest.raises(ConfigError, match="samples"):
        create_alignment("mmd", {"samples": 1})


@pytest.mark.parametrize("name", ["coral", "mmd"])
def test_the_term_is_added_to_the_training_loss_only(name):
    """Two sets whose features differ: the training loss is the segmentation loss plus the weighted term,
    and it sends gradient into the head; validation loss is the segmentation loss alone."""
    torch.manual_seed(0)
    head = create_head("linear", 4)
    module = SegmentationModule(Segmenter(head), lr=1e-3, weight_decay=0.0,
                                alignment=create_alignment(name, {"weight": 2.0, "samples": 64}))
    batch = [
        {"mask": torch.randint(0, 2, (28, 28)), "grids": [torch.randn(4, 2, 2) + 3.0 * s], "source": s}
        for s in (0, 1, 0, 1)
    ]
    plain = module.loss(batch)
    torch.manual_seed(1)
    aligned = module.loss(batch, align_features=True)
    assert float(aligned.detach()) > float(plain.detach()) + 1e-4
    # the same term by hand: the normalised grids (input of the classifier) as rows per set
    module.eval()  # BatchNorm in eval mode, so both forward passes normalise alike
    plain = module.loss(batch)
    captured = []
    hook = head.classifier.register_forward_pre_hook(lambda m, i: captured.append(i[0]))
    torch.manual_seed(1)
    aligned = module.loss(batch, align_features=True)
    hook.remove()
    fmap = captured[0]
    rows = {s: torch.cat([fmap[b].flatten(1).T for b in range(4) if batch[b]["source"] == s]) for s in (0, 1)}
    distance = coral_distance if name == "coral" else mmd_distance
    assert float(aligned - plain) == pytest.approx(2.0 * float(distance(rows[0], rows[1])), rel=1e-4)
    module.train()
    head.zero_grad()
    (module.loss(batch, align_features=True) - module.loss(batch)).backward()
    assert head.norm.weight.grad is not None and head.norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,head,extra", [
    ("coral", "linear", {}), ("mmd", "fusion", {"crop": 28, "crops_per_epoch": 4, "layers": [0, 1]}),
])
def test_each_method_trains_reloads_and_scores_the_same(name, head, extra, tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    config = TrainConfig.from_dict({
        "backbone": str(tiny_backbone_dir), "train": [a, b], "test": [a, b], "cache_dir": str(tmp_path / "cache"),
        "epochs": 2, "resolution": 56, "lr": 1e-3, "min_steps": 0, "batch_size": 2, "align": name,
        "align_settings": {"weight": 0.5, "samples": 128}, "head": head, **extra,
    })
    m = train_run(config, tmp_path / name, progress=False)
    assert m["run"]["align"] == name and m["run"]["align_settings"] == {"weight": 0.5, "samples": 128}
    again = evaluate_run(tmp_path / name, progress=False)
    for test_set in (a, b):
        assert again["test"][test_set]["fg_iou"] == m["test"][test_set]["fg_iou"]
