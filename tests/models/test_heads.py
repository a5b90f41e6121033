import pytest
import torch

from emfm.errors import ConfigError, UnknownNameError
from emfm.models.heads import DeconvHead, LinearHead, create_head, head_default_lr, head_layers, head_names
from tests.models._heads import build, inputs

_CONV = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# The state_dict keys of the first release's heads (read off its code: LinearHead = norm + classifier;
# DeconvHead = body Sequential of [conv, BN, GELU] + 4 x [convT, BN, GELU, conv, BN, GELU], classifier).
# Checkpoints written then store exactly these.
LINEAR_KEYS = [f"norm.{k}" for k in _BN] + [f"classifier.{k}" for k in _CONV]
_DECONV_MODULES = [("body.0", _CONV), ("body.1", _BN)]
for _i in (3, 9, 15, 21):
    # ConvTranspose2d, BatchNorm2d, (GELU), Conv2d, BatchNorm2d, (GELU)
    _DECONV_MODULES += [(f"body.{_i + j}", keys) for j, keys in ((0, _CONV), (1, _BN), (3, _CONV), (4, _BN))]
DECONV_KEYS = [f"{m}.{k}" for m, keys in _DECONV_MODULES for k in keys] + [f"classifier.{k}" for k in _CONV]


def test_linear_head_keeps_the_grid_size():
    head = create_head("linear", 32)
    assert head([torch.randn(2, 32, 5, 7)]).shape == (2, 2, 5, 7)


def test_deconv_head_matches_the_protocol():
    head = create_head("deconv", 32)
    out = head([torch.randn(2, 32, 3, 4)])
    assert out.shape == (2, 2, 48, 64)  # four x2 up-blocks
    convt = [m for m in head.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convt] == [(512, 256), (256, 128), (128, 64), (64, 64)]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in convt)
    assert DeconvHead.widths == (512, 256, 128, 64, 64)


def test_unknown_head_suggests_names():
    assert set(head_names()) >= {"linear", "deconv", "multilinear", "dpt", "fusion"}
    with pytest.raises(UnknownNameError, match=r"unknown head 'linaer'.*Did you mean 'linear'"):
        create_head("linaer", 8)


@pytest.mark.parametrize(("name", "keys"), [("linear", LINEAR_KEYS), ("deconv", DECONV_KEYS)])
def test_first_release_heads_keep_their_state_dict_keys(name, keys):
    head = create_head(name, 32)
    assert list(head.state_dict()) == keys
    # an old checkpoint (these keys, these shapes) loads strictly into a head built today
    old = {k: torch.rand_like(v.float()).to(v.dtype) for k, v in create_head(name, 32).state_dict().items()}
    head.load_state_dict(old, strict=True)
    assert torch.equal(head.state_dict()["classifier.weight"], old["classifier.weight"])


def test_linear_head_is_batchnorm_then_a_1x1_conv():
    head = LinearHead(32).eval()
    grid = torch.randn(2, 32, 4, 5)
    expected = torch.nn.functional.conv2d(head.norm(grid), head.classifier.weight, head.classifier.bias)
    assert torch.allclose(head([grid]), expected)


@pytest.mark.parametrize(("name", "num_layers"), [("linear", 4), ("deconv", 2), ("dpt", 3), ("dpt", 1)])
def test_heads_built_around_a_block_count_refuse_another(name, num_layers):
    with pytest.raises(ConfigError, match=r"reads exactly \d backbone block"):
        create_head(name, 32, num_layers=num_layers)


def test_zero_blocks_are_refused():
    with pytest.raises(ConfigError, match="at least one backbone block"):
        create_head("multilinear", 32, num_layers=0)


def test_a_head_given_the_wrong_number_of_grids_says_so():
    head = build("multilinear")
    grids, _ = inputs("multilinear", num_layers=3)
    with pytest.raises(ValueError, match="built for 4 grid"):
        head(grids)


def test_the_fusion_head_without_pixels_says_so():
    head = build("fusion")
    grids, _ = inputs("fusion")
    with pytest.raises(ValueError, match="needs the input pixels"):
        head(grids)


def test_default_blocks_move_to_the_same_relative_depth():
    assert head_layers("dpt", 12) == (2, 5, 8, 11)
    assert head_layers("dpt", 40) == (9, 19, 29, 39)  # Depth Anything's ViT-g blocks
    assert head_layers("dpt", 24) == (5, 11, 17, 23)
    assert head_layers("fusion", 2) == (0, 0, 1, 1)  # never below block 0, the final block stays last
    assert head_layers("linear", 24) == (-1,)
    with pytest.raises(ConfigError):
        head_layers("dpt", 0)


def test_every_head_has_a_positive_default_learning_rate():
    assert head_default_lr("linear") == 1e-3
    assert all(head_default_lr(n) > 0 for n in head_names())
