"""DANN: the gradient-reversal layer, the discriminator trained beside the head but never saved, and a run
that trains, reloads and scores the same."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from emfm.align import create_alignment
from emfm.align.adversarial import feature_width, reverse_gradient
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.evaluate.run import evaluate_run
from emfm.models.heads import create_head
from emfm.models.segmenter import Segmenter
from emfm.train.module import SegmentationModule
from emfm.train.run import train_run


def test_reverse_gradient_is_the_identity_forward_and_flips_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    upstream = torch.randn(5, 3)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.25 * upstream)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        create_alignment("dann", {"weight": -0.1})
    with pytest.raises(ConfigError, match="hidden"):
        create_alignment("dann", {"hidden": 0})


def _module(weight: float = 0.5):
    torch.manual_seed(0)
    head = create_head("linear", 4)
    alignment = create_alignment("dann", {"weight": weight, "samples": 16, "hidden": 8})
    alignment.prepare_head(head, ["a", "b"])
    return SegmentationModule(Segmenter(head), lr=1e-3, weight_decay=0.0, alignment=alignment), head, alignment


def _batch():
    return [{"mask": torch.randint(0, 2, (28, 28)), "grids": [torch.randn(4, 2, 2) + 3.0 * s], "source": s}
            for s in (0, 1, 0, 1)]


def test_the_discriminator_is_sized_from_the_head_and_trained_with_it():
    module, head, alignment = _module()
    disc = alignment.discriminator
    assert module.align_module is disc
    assert disc[0].in_features == feature_width(head.classifier) == 4 and disc[-1].out_features == 2
    optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in disc.parameters())
    assert all(id(p) in optimised for p in head.parameters())
    assert not any(k.startswith("align") for k in module.segmenter.state_dict())  # not part of the saved model


def test_the_head_gets_the_discriminators_gradient_reversed_and_weighted(monkeypatch):
    """The term's gradient: the discriminator descends its cross-entropy, the head ascends it times the weight."""
    import emfm.align.adversarial as adversarial

    module, head, alignment = _module(weight=0.5)
    batch = _batch()
    module.eval()  # BatchNorm on running statistics, so every forward pass normalises alike

    def term_gradients() -> tuple[float, torch.Tensor, torch.Tensor]:
        head.zero_grad()
        alignment.discriminator.zero_grad()
        torch.manual_seed(1)  # the same rows subsampled each time
        term = module.loss(batch, align_features=True) - module.loss(batch)
        term.backward()
        return float(term), head.norm.weight.grad.clone(), alignment.discriminator[0].weight.grad.clone()

    term, reversed_head, reversed_disc = term_gradients()
    assert term == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=0.3)  # near chance at the start
    monkeypatch.setattr(adversarial, "reverse_gradient", lambda x, coefficient: x)  # the plain cross-entropy
    _, plain_head, plain_disc = term_gradients()
    assert plain_head.abs().sum() > 0
    torch.testing.assert_close(reversed_head, -0.5 * plain_head)
    torch.testing.assert_close(reversed_disc, plain_disc)


@pytest.mark.parametrize(("name", "layers", "width"), [("linear", 1, 4), ("multilinear", 2, 8), ("fusion", 2, 16)])
def test_the_feature_width_is_the_last_layers_input(name, layers, width):
    """For every head the input width of its last layer, also where that layer is a block around a conv."""
    from emfm.models.heads import feature_module

    head = create_head(name, 4, num_layers=layers)
    assert feature_width(feature_module(head)) == width
    captured = []
    handle = feature_module(head).register_forward_pre_hook(lambda m, i: captured.append(i[0]))
    pixels = torch.randn(1, 3, 28, 28) if getattr(head, "needs_pixels", False) else None
    head([torch.randn(1, 4, 2, 2)] * layers, pixels)
    handle.remove()
    assert captured[0].shape[1] == width


def test_one_training_set_adds_no_term():
    module, _, alignment = _module()
    assert alignment.feature_loss({0: torch.randn(10, 4)}) is None


def test_a_run_trains_reloads_and_scores_the_same_without_the_discriminator(tiny_backbone_dir, datasets, tmp_path):
    a, b = datasets
    config = TrainConfig.from_dict({
        "backbone": str(tiny_backbone_dir), "train": [a, b], "test": [a, b], "cache_dir": str(tmp_path / "cache"),
        "epochs": 2, "resolution": 56, "lr": 1e-3, "min_steps": 0, "batch_size": 2, "align": "dann",
        "align_settings": {"weight": 0.3, "samples": 64, "hidden": 16}, "head": "multilinear", "layers": [0, 1],
    })
    m = train_run(config, tmp_path / "dann", progress=False)
    assert m["run"]["align"] == "dann" and m["run"]["align_settings"] == {"weight": 0.3, "samples": 64, "hidden": 16}
    saved = load_file(str(next((tmp_path / "dann").glob("*.safetensors"))))
    assert not any("align" in k or "discriminator" in k for k in saved)
    again = evaluate_run(tmp_path / "dann", progress=False)
    for test_set in (a, b):
        assert again["test"][test_set]["fg_iou"] == m["test"][test_set]["fg_iou"]
