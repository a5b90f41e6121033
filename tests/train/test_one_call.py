"""Cache-only training hands Lightning one epoch a call (emfm.train.bank.OneCallPerEpoch) and steps the optimiser
itself: the same curve, kept epoch and weights as Lightning's own step per batch, to the bit, whatever the
head, crops, alignment, schedule or stopping rule."""

from __future__ import annotations

import math

import pytest
import torch

from emfm.train.bank import OneCallPerEpoch, WholeEpoch
from emfm.train.fit import fit, make_loaders, whole_epochs
from tests.train.test_bank import fitted_from, head_state, planned

CASES = {
    "whole slices, linear": dict(head="linear", batch_size=3),
    "crops, multilinear, cosine": dict(head="multilinear", layers=[0, 1], crop=28, crops_per_epoch=6, batch_size=4,
                                       lr_schedule="cosine"),
    "joint, domain-bn": dict(head="linear", joint=True, align="domain-bn", batch_size=4),
    "joint, mixed batches, no clipping": dict(head="linear", joint=True, align="mixed", batch_size=4, grad_clip=0),
    "joint, dann": dict(head="linear", joint=True, align="dann", batch_size=4),
}


def fitted_both_ways(plan, data, model):
    """(history, best epoch, head weights) trained a step a call and an epoch a call, from the same start."""
    start = head_state(model)
    out = {}
    for one_call in (False, True):
        fitted, weights = fitted_from(start, plan, data, model, one_call_per_epoch=one_call)
        out[one_call] = (fitted.history, fitted.best_epoch, weights)
    return start, out[False], out[True]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_epoch_a_call_trains_the_same_model_to_the_bit(tiny_backbone_dir, datasets, tmp_path, case):
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, **CASES[case])
    assert whole_epochs(plan, model, None)  # the default for this cache-only run on one process
    start, (curve, best, weights), (one_curve, one_best, one_weights) = fitted_both_ways(plan, data, model)
    assert len(curve) == 3 and curve == one_curve and best == one_best
    assert weights.keys() == one_weights.keys() and all(torch.equal(weights[k], one_weights[k]) for k in weights)
    assert any(not torch.equal(start[k], weights[k]) for k in start)  # it did train
    if "dann" in case:
        assert all("align_loss" not in row for row in curve)  # logged, not part of the history rows


def test_early_stopping_held_back_by_min_steps_ends_mid_epoch_as_lightnings_loop_does(
    tiny_backbone_dir, datasets, tmp_path
):
    """Early stopping fires, min_steps holds training on, and Lightning stops at the step that meets min_steps,
    mid-epoch: an epoch handed over whole must stop at the same step."""
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, head="linear", batch_size=2, lr=3.0,
                                epochs=40, patience=1, min_steps=13)
    loader, _, _ = make_loaders(plan, data, model)
    steps_per_epoch = len(loader)
    assert plan.config.min_steps % steps_per_epoch  # min_steps falls inside an epoch
    _, (curve, best, weights), (one_curve, one_best, one_weights) = fitted_both_ways(plan, data, model)
    assert len(curve) == math.ceil(plan.config.min_steps / steps_per_epoch) < plan.config.epochs  # stopped there
    assert curve == one_curve and best == one_best and all(torch.equal(weights[k], one_weights[k]) for k in weights)


def test_one_call_per_epoch_is_for_packed_batches_on_one_process(tiny_backbone_dir, datasets, tmp_path):
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, head="linear")
    loader, _, _ = make_loaders(plan, data, model)
    wrapped = OneCallPerEpoch(loader)
    (epoch,) = list(wrapped)
    assert len(wrapped) == 1 and isinstance(epoch, WholeEpoch) and len(epoch) == len(loader)
    assert wrapped.dataset is loader.dataset and wrapped.sampler is loader.sampler  # crop windows, batch order
    assert [len(b) for b in epoch] == [len(b) for b in loader]
    assert not whole_epochs(plan, model, packed=False)  # the item path steps through Lightning
    ddp = plan.__class__(**{**plan.__dict__, "config": plan.config.replace(devices=2)})
    assert not whole_epochs(ddp, model, None)  # each DDP process's steps go through Lightning's own
    live, live_data, live_model = planned(tiny_backbone_dir, datasets, tmp_path / "lora", head="linear",
                                          adapter="lora", lora_rank=2)
    assert not whole_epochs(live, live_model, None)
    with pytest.raises(ValueError, match="packed"):
        fit(live, live_data, live_model, progress=False, one_call_per_epoch=True)
