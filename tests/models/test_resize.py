"""The training path's bilinear resize: torch's ``interpolate`` to float rounding, as two matmuls."""

import pytest
import torch
import torch.nn.functional as F

from emfm.models.resize import bilinear_resize, bilinear_taps


def _reference(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((2, 2, 27, 37), (389, 518)), ((1, 3, 16, 16), (224, 224)), ((2, 4, 20, 30), (7, 11)), ((1, 1, 5, 9), (5, 40))],
)
def test_matches_interpolate_in_value_and_gradient(shape, size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, requires_grad=True)
    upstream = torch.randn(shape[0], shape[1], *size, generator=gen)
    ours = bilinear_resize(x, size)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    ref = _reference(x, size)
    (grad_ref,) = torch.autograd.grad(ref, x, upstream)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-4)


def test_without_a_gradient_it_is_interpolate_to_the_bit():
    x = torch.randn(2, 2, 27, 37)
    assert torch.equal(bilinear_resize(x, (389, 518)), _reference(x, (389, 518)))
    with torch.no_grad():
        y = torch.randn(1, 2, 9, 13, requires_grad=True)
        assert torch.equal(bilinear_resize(y, (50, 60)), _reference(y, (50, 60)))


def test_training_path_is_the_matmul_form():
    """The gradient path really is the matmul one: its autograd graph holds matmuls, not a bilinear node."""
    x = torch.randn(1, 2, 6, 8, requires_grad=True)
    out = bilinear_resize(x, (30, 40))
    names = []
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        names.append(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    assert not any("UpsampleBilinear" in n for n in names), names
    assert any("Mm" in n or "Bmm" in n for n in names), names


def test_same_size_returns_the_input():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    assert bilinear_resize(x, (5, 5)) is x


def test_taps_are_rows_of_two_weights_summing_to_one():
    taps = bilinear_taps(27, 389, torch.float32, "cpu")
    assert taps.shape == (389, 27)
    torch.testing.assert_close(taps.sum(1), torch.ones(389))
    assert int((taps > 0).sum(1).max()) <= 2


def test_keeps_its_precision_under_autocast():
    x = torch.randn(1, 2, 6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bilinear_resize(x, (30, 40))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(x, (30, 40)), rtol=0, atol=2e-6)
