"""Domain-alignment methods on two tiny synthetic sets with a deliberate intensity shift: each trains, reloads
and scores the same; batches are mixed as promised; domain BN keeps one set of statistics per set and AdaBN
re-estimates them on a new set without reading its labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emfm._io import safe_name
from emfm.align import create_alignment
from emfm.align.domain_bn import DomainBatchNorm2d, domain_norms
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.checkpoint import load_checkpoint
from emfm.models.heads import create_head
from emfm.train.crops import CropItems, CropSource
from emfm.train.datasets import MixedOrder
from emfm.train.run import train_run
from emfm.transforms import Preprocessing


def joint(backbone, a, b, tmp_path, **kw):
    base = {"backbone": str(backbone), "train": [a, b], "test": [a, b], "cache_dir": str(tmp_path / "cache"),
            "epochs": 2, "resolution": 56, "lr": 1e-3, "min_steps": 0, "batch_size": 2}
    return TrainConfig.from_dict({**base, **kw})


@pytest.mark.parametrize("align,head,extra", [
    ("mixed", "linear", {}), ("weighted", "linear", {"align_settings": {"weights": [1.0, 3.0]}}),
    ("domain-bn", "linear", {}), ("domain-bn", "fusion", {"crop": 28, "crops_per_epoch": 4, "layers": [0, 1]}),
])
def test_each_method_trains_reloads_and_scores_the_same(align, head, extra, tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    out = tmp_path / align
    m = train_run(joint(tiny_backbone_dir, a, b, tmp_path, align=align, head=head, **extra), out, progress=False)
    assert m["run"]["align"] == align
    again = evaluate_run(out, progress=False)
    for name in (a, b):
        assert again["test"][name]["fg_iou"] == m["test"][name]["fg_iou"]


def test_mixed_batches_hold_one_item_of_each_set():
    order = list(MixedOrder([0, 0, 0, 0, 1, 1], seed=3))
    sources = [0, 0, 0, 0, 1, 1]
    assert len(order) == 8 and sorted(set(order)) == list(range(6))
    assert all({sources[order[i]], sources[order[i + 1]]} == {0, 1} for i in range(0, 8, 2))
    prep = Preprocessing(28, 14)
    srcs = [CropSource(mask=torch.zeros(28, 28, dtype=torch.long), dataset=d) for d in (0, 0, 0, 1)]
    items = CropItems(srcs, crop=14, patch=14, length=8, preprocessing=prep, want_pixels=False, mixed=True)
    assert [items[i]["source"] for i in range(8)] == [0, 1] * 4


def test_a_weight_per_training_set_is_checked():
    with pytest.raises(ConfigError, match="one weight per training set"):
        TrainConfig.from_dict(
            {"backbone": "x", "train": "a,b", "align": "weighted", "align_settings": {"weights": [1]}}
        )
    method = create_alignment("weighted", {"weights": [1.0, 3.0]})
    value = method.combine({0: torch.tensor(1.0), 1: torch.tensor(2.0)}, {0: 10, 1: 1})
    assert float(value) == pytest.approx((1 * 1 + 3 * 2) / 4)


def test_domain_bn_keeps_statistics_per_set_and_shares_the_weights():
    head = create_head("linear", 4)
    method = create_alignment("domain-bn")
    method.prepare_head(head, ["a", "b"])
    (norm,) = domain_norms(head)
    head.train()
    for domain, shift in ((0, 0.0), (1, 5.0)):
        method.set_domain(head, domain)
        head([torch.randn(8, 4, 3, 3) + shift])
    means = [n.running_mean.mean().item() for n in norm.norms]
    assert means[0] < 0.2 < 0.4 < means[1]
    assert sum(isinstance(p, torch.nn.Parameter) for p in norm.parameters()) == 2  # one shared affine pair
    method.set_domain(head, None)
    with pytest.raises(RuntimeError, match="without a domain"):
        head([torch.randn(2, 4, 3, 3)])
    head.eval()
    mean, var = norm.pooled_statistics()
    assert torch.allclose(mean, torch.stack([n.running_mean for n in norm.norms]).mean(0))
    assert isinstance(norm, DomainBatchNorm2d)


def test_adabn_changes_only_normalisation_statistics_and_never_reads_labels(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    out = tmp_path / "dbn"
    train_run(joint(tiny_backbone_dir, a, b, tmp_path, train=[a], test=[a], align="domain-bn"), out, progress=False)
    segmenter, info = load_checkpoint(out / "checkpoint.safetensors")
    before = {k: v.clone() for k, v in segmenter.head.state_dict().items()}
    from emfm.data import load_split

    stack = load_split(b, "test")
    seen = []

    def forward_all():
        for img in stack.images:
            seen.append(img.shape)
            segmenter(info.preprocessing.pixels(img)[None])

    method = info.make_alignment()
    with method.test_domain(segmenter.head, b, info.domains, forward_all):
        (norm,) = domain_norms(segmenter.head)
        adapted = norm.norms[-1]
        assert len(norm.norms) == 2 and int(adapted.num_batches_tracked) == len(stack)
        assert not torch.allclose(adapted.running_mean, norm.norms[0].running_mean)
    after = segmenter.head.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert len(seen) == len(stack)
    # What AdaBN predicts on the unseen set does not depend on its labels: with every mask inverted, the
    # predictions are identical (only the score changes).
    import shutil

    import tifffile
    from PIL import Image

    root = Path(b.split(":", 1)[1])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(root, corrupt)
    for mask in (corrupt / "test" / "masks").iterdir():
        Image.fromarray(np.where(np.asarray(Image.open(mask)) > 0, 0, 255).astype(np.uint8)).save(mask)
    clean = evaluate_run(out, test=[b], progress=False)["test"][b]
    clean_pred = tifffile.imread(out / "predictions" / f"{safe_name(b)}.tif")
    flipped = evaluate_run(out, test=[f"folder:{corrupt}"], progress=False)["test"][f"folder:{corrupt}"]
    flipped_pred = tifffile.imread(out / "predictions" / f"{safe_name(f'folder:{corrupt}')}.tif")
    assert np.array_equal(clean_pred, flipped_pred) and clean["fg_iou"] != flipped["fg_iou"]
