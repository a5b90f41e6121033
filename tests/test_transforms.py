import numpy as np
import pytest
import torch

from emfm.errors import ConfigError, DataError
from emfm.transforms import image_to_tensor, mask_to_tensor, resized_shape, to_unit_float


@pytest.mark.parametrize(
    "shape,res,patch,expected",
    [((768, 1024), 1022, 14, (756, 1022)), ((768, 1024), 1022, 16, (752, 1008)),
     ((1024, 1024), 1022, 14, (1022, 1022)), ((1024, 1024), 1022, 16, (1008, 1008)),
     ((768, 1024), 518, 14, (378, 518))],
)
def test_resized_shape_follows_the_protocol(shape, res, patch, expected):
    assert resized_shape(shape, res, patch) == expected


def test_resolution_smaller_than_a_patch_is_refused():
    with pytest.raises(ConfigError, match="smaller than the patch size 14"):
        resized_shape((100, 100), 10, 14)
    with pytest.raises(ConfigError, match="shorter than one 14-px patch"):
        resized_shape((10, 1000), 100, 14)


def test_image_to_tensor_normalises_and_repeats_grey():
    img = np.full((20, 30), 255, dtype=np.uint8)
    t = image_to_tensor(img, (14, 28), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert t.shape == (3, 14, 28)
    assert torch.allclose(t[0], torch.ones(14, 28)) and torch.allclose(t[1], torch.full((14, 28), 2.0))


def test_sixteen_bit_and_bad_dtypes():
    assert to_unit_float(np.array([[65535, 0]], dtype=np.uint16)).tolist() == [[1.0, 0.0]]
    with pytest.raises(DataError, match="uint8 or uint16"):
        to_unit_float(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="2-D grey slice"):
        to_unit_float(np.zeros((2, 2, 3), dtype=np.uint8))


def test_mask_nearest_keeps_binary_values():
    m = np.zeros((10, 10), dtype=np.uint8)
    m[:5] = 1
    t = mask_to_tensor(m, (4, 4))
    assert set(t.unique().tolist()) == {0, 1} and t[:2].all() and not t[2:].any()
