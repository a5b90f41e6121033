import math

import numpy as np
import pytest
import torch

from emfm.evaluate.metrics import PooledCounts, dice_loss, pooled_scores


def test_pooled_iou_is_total_intersection_over_total_union():
    # slice 1: pred 4 px, truth 2 px, overlap 2 -> I=2, U=4; slice 2: pred 1, truth 3, overlap 1 -> I=1, U=3
    p1 = np.array([[1, 1], [1, 1]])
    t1 = np.array([[1, 1], [0, 0]])
    p2 = np.array([[1, 0, 0], [0, 0, 0]])
    t2 = np.array([[1, 1, 1], [0, 0, 0]])
    c = pooled_scores([p1, p2], [t1, t2])
    assert c.fg_iou == pytest.approx(3 / 7)  # not the mean of 2/4 and 1/3
    assert c.dice == pytest.approx(2 * 3 / (5 + 5))
    assert c.per_slice == [pytest.approx(0.5), pytest.approx(1 / 3)]


def test_empty_slice_has_no_iou_and_empty_set_is_nan():
    c = PooledCounts()
    assert math.isnan(c.fg_iou)
    c.add(np.zeros((2, 2)), np.zeros((2, 2)))
    assert c.per_slice == [None]
    with pytest.raises(ValueError, match="differ in shape"):
        c.add(np.zeros((2, 2)), np.zeros((3, 2)))


def test_merge_pools_counts():
    a = pooled_scores([np.ones((2, 2))], [np.ones((2, 2))])
    b = pooled_scores([np.zeros((2, 2))], [np.ones((2, 2))])
    assert a.merge(b).fg_iou == pytest.approx(4 / 8)


def test_dice_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])  # (1, 1, 2)
    p = torch.softmax(logits, dim=1)[0, :, 0, :]  # (2 classes, 2 px)
    onehot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    per_class = (2 * (p * onehot).sum(1) + 1) / (p.sum(1) + onehot.sum(1) + 1)
    assert dice_loss(logits, target).item() == pytest.approx(1 - per_class.mean().item(), abs=1e-6)
    perfect = torch.tensor([[[[-20.0, 20.0]], [[20.0, -20.0]]]])
    assert dice_loss(perfect, target, eps=0).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_over_parts_equals_one_batch():
    torch.manual_seed(0)
    lg = torch.randn(2, 2, 4, 4)
    tg = torch.randint(0, 2, (2, 4, 4))
    whole = dice_loss(lg, tg)
    parts = dice_loss([lg[:1], lg[1:]], [tg[:1], tg[1:]])
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_per_slice_counts_and_empty_slices_are_kept_in_slice_order():
    p1, t1 = np.array([[1, 1], [1, 1]]), np.array([[1, 1], [0, 0]])  # I=2, U=4
    empty = np.zeros((2, 2))
    p3, t3 = np.array([[1, 0], [0, 0]]), np.array([[1, 1], [1, 0]])  # I=1, U=3
    c = pooled_scores([p1, empty, p3], [t1, empty, t3])
    assert c.slice_counts == [(2, 4), (0, 0), (1, 3)]
    assert c.columns() == ([2, 0, 1], [4, 0, 3])
    assert c.empty_slices == 1 and c.per_slice[1] is None
    merged = c.merge(pooled_scores([empty], [empty]))
    assert merged.empty_slices == 2 and merged.slice_counts[-1] == (0, 0)


def test_a_stack_summary_has_its_slice_interval_and_counts():
    from emfm.evaluate.evaluate import StackResult, slice_interval, summarise

    rng = np.random.default_rng(0)
    trues = [rng.random((8, 8)) > 0.6 for _ in range(12)]
    preds = [t ^ (rng.random((8, 8)) > 0.85) for t in trues]
    native = pooled_scores(preds, trues)
    out = summarise({"a": StackResult(native, native, []), "b": StackResult(native, native, [])},
                    {"a": [str(i) for i in range(12)], "b": [str(i) for i in range(12)]})
    a = out["test"]["a"]
    assert a["empty_slices"] == 0 and [s["union"] for s in a["per_slice"]] == native.columns()[1]
    low, high = a["fg_iou_interval"]["low"], a["fg_iou_interval"]["high"]
    assert low < a["fg_iou"] < high and "block bootstrap" in a["fg_iou_interval"]["method"]
    assert a["fg_iou_interval"]["block_length"] == 3  # ceil(12 ** (1/3))
    assert a["fg_iou_interval"] == slice_interval([native])  # seeded: the same counts, the same interval
    assert out["test_pooled"]["fg_iou_interval"]["block_length"] == [3, 3]  # blocks within each set


def test_class_map_is_argmax_over_classes_with_the_first_maximum_on_ties():
    import torch

    from emfm.evaluate.metrics import class_map

    logits = torch.randn(2, 3, 17, 23, generator=torch.Generator().manual_seed(0)).round()  # many ties
    logits[0, :, 0, 0] = 0.0  # a pixel tied across all classes goes to class 0
    assert torch.equal(class_map(logits), logits.argmax(1))
    assert class_map(logits)[0, 0, 0] == 0


def test_one_hot_classes_is_f_one_hot_channels_first():
    import torch

    from emfm.evaluate.metrics import one_hot_classes

    target = torch.tensor([[[0, 1, 2], [2, 2, 0]]])
    expected = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).bool()
    got = one_hot_classes(target, 3)
    assert got.shape == (1, 3, 2, 3) and torch.equal(got, expected)
    assert got[0, :, 0, 2].tolist() == [False, False, True]


def test_dice_loss_gives_the_one_hot_formulation_to_the_bit():
    import torch

    from emfm.evaluate.metrics import dice_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 37, 53, generator=gen, requires_grad=True)
    target = torch.randint(0, 2, (2, 37, 53), generator=gen)
    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
    inter, denom = (probs * onehot).sum((0, 2, 3)), probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    reference = 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()
    loss = dice_loss(logits, target)
    assert torch.equal(loss, reference)
    assert torch.equal(*(torch.autograd.grad(x, logits, retain_graph=True)[0] for x in (loss, reference)))
