"""Cache-only training cut from one bank of grids (emfm.train.bank) trains exactly the model the item path
trains, on whole slices, on crops and with per-set normalisation; and it runs on the thread count chosen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emfm.config import TrainConfig
from emfm.runsets import load_stacks
from emfm.train.bank import BankItems, GridBank
from emfm.train.datasets import PackedBatch, pack_items
from emfm.train.fit import cache_only, fit, make_loaders, training_threads
from emfm.train.run import prepare, resolve, resolve_config

CASES = {
    "whole slices, linear": dict(head="linear", batch_size=3),
    "crops, multilinear": dict(head="multilinear", layers=[0, 1], crop=28, crops_per_epoch=6, batch_size=4),
    "joint, domain-bn": dict(head="linear", joint=True, align="domain-bn", batch_size=4),
}


def planned(backbone, datasets, tmp_path, *, joint: bool = False, **kw):
    a, b = datasets
    settings = dict(resolution=56, epochs=3, lr=1e-2, patience=0, min_steps=0, cache_dir=str(tmp_path / "cache"))
    settings.update(kw)  # a test may change any of these
    cfg = TrainConfig.from_dict(dict(backbone=str(backbone), train=[a, b] if joint else [a], test=[a], **settings))
    cfg = resolve_config(cfg)
    data = load_stacks(cfg, progress=False)
    plan = resolve(cfg, data)
    return plan, data, prepare(plan, data, progress=False)


def head_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.segmenter.head.state_dict().items()}


def fitted_from(start: dict, plan, data, model, **fit_kwargs):
    """Fit from the head state ``start`` and the run's seed; the Fitted and the head's weights after it."""
    model.segmenter.head.load_state_dict(start)
    torch.manual_seed(plan.config.seed)
    fitted = fit(plan, data, model, progress=False, **fit_kwargs)
    return fitted, head_state(model)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_packed_training_gives_the_item_paths_curve_and_weights(tiny_backbone_dir, datasets, tmp_path, case):
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, **CASES[case])
    assert cache_only(plan, model)
    start = head_state(model)
    results = {}
    for packed in (False, True):
        fitted, weights = fitted_from(start, plan, data, model, packed=packed)
        results[packed] = ([{k: row[k] for k in ("train_loss", "val_loss") if k in row} for row in fitted.history],
                           weights)
    (item_curve, item_weights), (packed_curve, packed_weights) = results[False], results[True]
    assert len(item_curve) == 3 and item_curve == packed_curve
    assert item_weights.keys() == packed_weights.keys()
    assert all(torch.equal(item_weights[k], packed_weights[k]) for k in item_weights)
    assert any(not torch.equal(start[k], item_weights[k]) for k in start)  # it did train


@pytest.mark.parametrize("case", ["crops, multilinear", "joint, domain-bn"])
def test_a_bank_batch_holds_the_items_the_item_path_stacks(tiny_backbone_dir, datasets, tmp_path, case):
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, **CASES[case])
    items, _, _ = make_loaders(plan, data, model, packed=False)
    banked, _, _ = make_loaders(plan, data, model, packed=True)
    assert isinstance(banked.dataset, BankItems) and isinstance(banked.dataset.bank, GridBank)
    per_domain = case.startswith("joint")
    for listed, packed in zip(items, banked):
        expected = pack_items(listed, per_domain=per_domain)
        assert isinstance(packed, PackedBatch) and len(packed) == len(expected) == len(listed)
        for got, want in zip(packed.groups, expected.groups):
            assert (got.domain, got.sources) == (want.domain, want.sources)
            assert torch.equal(got.masks, want.masks)
            assert len(got.grids) == len(want.grids) and all(torch.equal(g, w) for g, w in zip(got.grids, want.grids))


def test_the_bank_holds_one_copy_of_the_features(tiny_backbone_dir, datasets, tmp_path):
    """After the bank is filled, the run's features hold the bank's rows (views), not their own copies."""
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, head="linear")
    loader, _, _ = make_loaders(plan, data, model, packed=True)
    bank = loader.dataset.bank
    storages = {layer.untyped_storage().data_ptr() for group in bank.grids for layer in group}
    train = [f for name, f in model.features.items() if name.startswith("train:")]
    assert train and all(g.untyped_storage().data_ptr() in storages for f in train for g in f.grids)


def test_training_runs_on_the_threads_asked_for_and_puts_torchs_setting_back(
    tiny_backbone_dir, datasets, tmp_path, monkeypatch
):
    plan, data, model = planned(tiny_backbone_dir, datasets, tmp_path, head="linear")
    assert training_threads(plan, model) is None  # torch's default unless asked
    fusion, _, fmodel = planned(tiny_backbone_dir, datasets, tmp_path, head="fusion", layers=[0, 1], crop=28,
                                crops_per_epoch=4)
    assert not cache_only(fusion, fmodel)  # a pixel branch: batches go through the item path
    chosen = dataclasses.replace(plan, config=plan.config.replace(train_threads=1))
    assert training_threads(chosen, model) == 1
    from emfm.train.module import SegmentationModule

    seen = []
    step = SegmentationModule.training_step

    def training_step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SegmentationModule, "training_step", training_step)
    before = torch.get_num_threads()
    fit(chosen, data, model, progress=False)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before  # put back after training
