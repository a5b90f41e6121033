import pytest
import torch

from emfm.errors import UnknownNameError
from emfm.models.heads import DeconvHead, create_head, head_names


def test_linear_head_keeps_the_grid_size():
    head = create_head("linear", 32)
    assert head(torch.randn(2, 32, 5, 7)).shape == (2, 2, 5, 7)


def test_deconv_head_matches_the_protocol():
    head = create_head("deconv", 32)
    out = head(torch.randn(2, 32, 3, 4))
    assert out.shape == (2, 2, 48, 64)  # four x2 up-blocks
    convt = [m for m in head.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convt] == [(512, 256), (256, 128), (128, 64), (64, 64)]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in convt)
    assert DeconvHead.widths == (512, 256, 128, 64, 64)


def test_unknown_head_suggests_names():
    assert set(head_names()) >= {"linear", "deconv"}
    with pytest.raises(UnknownNameError, match=r"unknown head 'linaer'.*Did you mean 'linear'"):
        create_head("linaer", 8)
