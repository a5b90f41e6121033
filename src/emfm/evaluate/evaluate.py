"""Score a segmenter on test stacks: pooled foreground IoU at each mask's native resolution.

Logits are resized bilinearly to the mask's own size before the argmax, so the number does not depend
on the network's input size. The study's way (argmax at the resized size against a nearest-resized
mask) is reported beside it as ``fg_iou_resized``, labelled as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from emfm.data._stack import SliceStack
from emfm.evaluate.inference import native_prediction, slice_logits
from emfm.evaluate.metrics import PooledCounts, class_map
from emfm.features import StackFeatures
from emfm.models.segmenter import Segmenter
from emfm.transforms import Preprocessing, mask_to_tensor


@dataclass
class StackResult:
    """Counts and predictions for one test stack."""

    native: PooledCounts
    resized: PooledCounts
    predictions: list[np.ndarray]

    def summary(self, ids: Sequence[str]) -> dict:
        return {
            "fg_iou": self.native.fg_iou,
            "fg_iou_interval": slice_interval([self.native]),
            "dice": self.native.dice,
            "n_slices": len(ids),
            "empty_slices": self.native.empty_slices,
            "fg_iou_resized": self.resized.fg_iou,
            "dice_resized": self.resized.dice,
            "per_slice": [
                {"id": sid, "fg_iou": v, "intersection": inter, "union": union}
                for sid, v, (inter, union) in zip(ids, self.native.per_slice, self.native.slice_counts)
            ],
        }


def slice_interval(stacks: Sequence[PooledCounts]) -> dict | None:
    """95% interval of the pooled foreground IoU over the slices: a moving-block bootstrap of each stack's
    slices in slice order (neighbouring slices are correlated), stratified by stack, seeded, so the same
    counts always give the same interval (:func:`emfm.stats.pooled_ratio_interval`). It says how much the
    number would move with other slices like these, not with another seed."""
    from emfm.stats import pooled_ratio_interval

    return pooled_ratio_interval([s.columns() for s in stacks])


def evaluate_stack(
    segmenter: Segmenter,
    stack: SliceStack,
    preprocessing: Preprocessing,
    *,
    features: StackFeatures | None = None,
    keep_predictions: bool = True,
    progress: bool = True,
) -> StackResult:
    """Pooled counts over one stack; ``features`` (cached grids) skip the backbone for frozen runs."""
    if len(stack) == 0:
        from emfm.errors import DataError

        raise DataError(f"test set {stack.dataset}/{stack.split} has no slices; check the data root")
    segmenter.eval()
    native, resized, preds = PooledCounts(), PooledCounts(), []
    for i in tqdm(range(len(stack)), desc=f"testing {stack.dataset}", disable=not progress):
        grids = features.head_grids(i, segmenter.layers) if features is not None else None
        logits = slice_logits(segmenter, stack.images[i], preprocessing, grids=grids)
        pred = native_prediction(logits, stack.masks[i].shape)
        native.add(pred, stack.masks[i])
        small_truth = mask_to_tensor(stack.masks[i], logits.shape[-2:]).numpy()
        resized.add(class_map(logits)[0].numpy(), small_truth)
        if keep_predictions:
            preds.append(pred)
    return StackResult(native, resized, preds)


def summarise(results: Mapping[str, StackResult], ids: Mapping[str, Sequence[str]]) -> dict:
    """``{"test": {name: {...}}, "test_pooled": {...}}``: each test set, and the pool of all of them."""
    out = {"test": {name: r.summary(ids[name]) for name, r in results.items()}}
    if len(results) > 1:
        native = resized = PooledCounts()
        for r in results.values():
            native, resized = native.merge(r.native), resized.merge(r.resized)
        out["test_pooled"] = {
            "fg_iou": native.fg_iou,
            "fg_iou_interval": slice_interval([r.native for r in results.values()]),  # blocks within each set
            "dice": native.dice,
            "n_slices": sum(len(v) for v in ids.values()),
            "empty_slices": native.empty_slices,
            "fg_iou_resized": resized.fg_iou,
            "datasets": list(results),
        }
    return out

