"""The run's own supervised loss on its own labelled slices, beside self-training, so the model does not drift.

Pseudo-labels are mostly right where the model was already confident and can pull it away from what its
labels taught it; training on the labelled source beside the target is the joint source-target self-training
of Archit & Pape 2023 (see :mod:`emfm.adapt.self_training`). Everything here is the run's, not a copy of it:
the slices are those its ``splits.json`` names (so a label budget or ``max_train_slices`` is honoured), read
from where its config found them; the items are training's own (:func:`emfm.train.fit.training_items`: its
crops, augmentation variants through the feature cache, intensity augmentation, balance and mixed batches);
the loss is training's (:meth:`emfm.train.module.SegmentationModule.loss`: Dice or Dice + CE, per-set
weights, per-set BatchNorm). When the data cannot be found, self-training goes on without it and
``adapt.json`` says why.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emfm.adapt.source import SourceRun, standardise
from emfm.data._stack import SliceStack
from emfm.errors import DataError, UnknownNameError

log = logging.getLogger(__name__)


@dataclass
class SourceBatches:
    """Seeded batches of the run's training items and the run's loss on them."""

    items: Any
    module: Any
    batch_size: int
    seed: int

    def batch(self, step: int) -> list[dict[str, Any]]:
        from emfm.train.crops import CropItems

        if isinstance(self.items, CropItems):  # crops are drawn from (seed, epoch, index): one "epoch" per step
            self.items.set_epoch(step)
            return [self.items[j] for j in range(self.batch_size)]
        rng = np.random.default_rng([self.seed, int(step), 1])
        return [self.items[int(j)] for j in rng.integers(len(self.items), size=self.batch_size)]

    def loss(self, step: int) -> torch.Tensor:
        return self.module.loss(self.batch(step))


def labelled_stacks(source: SourceRun) -> dict[str, SliceStack]:
    """The run's training slices with their masks, as it trained on them.

    Raises:
        DataError, UnknownNameError: the data are not where the run's config says.
    """
    from emfm.data import load_split
    from emfm.data.budget import apply_budget

    cfg, splits = source.config, source.splits()
    input_side = source.info.make_alignment().input_side
    out = {}
    for name in cfg.train:
        if cfg.cv_folds:  # a cross-validation fold: its parts are cut from the whole labelled pool
            from emfm.runsets import load_training_set

            stack, val = load_training_set(cfg, name, progress=False)
            if input_side:
                images = standardise(source, [*stack.images, *val.images])[: len(stack)]
                stack = dataclasses.replace(stack, images=images)
            out[name] = stack
            continue
        stack = load_split(name, "train", data_root=cfg.data_root, pairing=cfg.split_pairing("train"), progress=False)
        ids = (splits.get(name) or {}).get("train")
        if ids:
            stack = stack.subset(list(ids), "train")
        else:  # a run without splits.json: the selection load_stacks makes
            if cfg.max_train_slices:
                stack = stack.subset(stack.ids[: cfg.max_train_slices], "train")
            stack = apply_budget(stack, cfg.label_budget, cfg.label_pick, cfg.seed)
        if len(stack) == 0:
            raise DataError(f"training set {name} has no slices")
        if input_side:  # training standardised a set's train and val splits together, as one volume
            val = load_split(name, "val", data_root=cfg.data_root, pairing=cfg.split_pairing("train"), progress=False)
            images = standardise(source, [*stack.images, *val.images])[: len(stack)]
            stack = dataclasses.replace(stack, images=images)
        out[name] = stack
    return out


def source_batches(
    source: SourceRun, *, lr: float, batch_size: int, seed: int, progress: bool
) -> tuple[SourceBatches | None, dict[str, Any]]:
    """The run's supervised batches and loss, or None and the reason when its labelled data are not found."""
    try:
        stacks = labelled_stacks(source)
    except (DataError, UnknownNameError, OSError) as exc:
        log.warning("self-training without the source loss: the run's training data are not found (%s)", exc)
        return None, {"used": False, "reason": f"the run's training data were not found: {exc}"}
    from emfm.train.fit import training_items
    from emfm.train.module import SegmentationModule
    from emfm.train.run import Model, Plan, RunData

    cfg = source.config.replace(seed=seed)
    plan = Plan(config=cfg, adapter=source.info.make_adapter(), backbone=source.backbone,
                preprocessing=source.info.preprocessing, layers=source.layers, lr=lr,
                alignment=source.info.make_alignment())
    data = RunData(train={n: (s, s.subset([], "val")) for n, s in stacks.items()}, test={})
    model = Model(segmenter=source.segmenter, features=_features(source, plan, stacks, progress))
    items = training_items(plan, data, model, "train")
    module = SegmentationModule(source.segmenter, lr=lr, weight_decay=cfg.weight_decay, loss=cfg.loss,
                                alignment=plan.alignment).to(source.device)
    k = len(stacks)
    if plan.alignment.mixed_batches and k > 1:  # as training: a multiple of the number of sets
        batch_size = max(k, round(batch_size / k) * k)
    record = {"used": True, "train_slices": {n: len(s) for n, s in stacks.items()}, "loss": cfg.loss,
              "batch_size": batch_size}
    return SourceBatches(items, module, batch_size, seed), record


def _features(source: SourceRun, plan: Any, stacks: dict[str, SliceStack], progress: bool) -> dict[str, Any]:
    """Each training set's features per augmentation variant, through the feature cache (frozen runs), with
    the keys training gave them (so a run's own cache answers without running the backbone)."""
    if not source.uses_cached_features:
        return {}
    from emfm.features import encode_stack

    return {
        f"train:{name}:{variant}": encode_stack(
            plan.backbone, stack, preprocessing=plan.preprocessing, variant=variant, cache=source.cache,
            layers=plan.intermediate_layers, precision=source.encode_precision, progress=progress,
        )
        for name, stack in stacks.items()
        for variant in plan.variants
    }
