"""Image embeddings, crop samples and patch labels from synthetic grids and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emfm.analysis.embeddings import crop_embeddings, image_embeddings, patch_labels, patch_tokens
from emfm.errors import ConfigError, DataError


def test_mean_and_cls_embeddings():
    grids = [torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), torch.ones(2, 3, 4)]
    cls = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    mean = image_embeddings(grids, cls, "mean")
    assert mean.shape == (2, 2)
    np.testing.assert_allclose(mean[0], [5.5, 17.5])
    np.testing.assert_allclose(image_embeddings(grids, cls, "cls"), cls.numpy())
    with pytest.raises(ConfigError, match="unknown embedding 'max'"):
        image_embeddings(grids, cls, "max")
    with pytest.raises(DataError, match=r"\(C, h, w\)"):
        image_embeddings([torch.ones(3, 4)], cls, "mean")


def test_patch_tokens_are_row_major():
    grid = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    tokens = patch_tokens(grid)
    assert tokens.shape == (6, 2)
    np.testing.assert_array_equal(tokens[4], grid[:, 1, 1])


def test_crops_are_window_means():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(3, 6, 7))
    crops = crop_embeddings(grid, crop=2, n_crops=50, rng=np.random.default_rng(1))
    assert crops.shape == (50, 3)
    windows = np.array([grid[:, i : i + 2, j : j + 2].mean(axis=(1, 2)) for i in range(5) for j in range(6)])
    nearest = np.abs(crops[:, None, :] - windows[None]).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-5  # every crop is exactly one 2 x 2 window's mean
    assert len(np.unique(np.round(crops, 4), axis=0)) > 10  # at many positions
    whole = crop_embeddings(grid, crop=99, n_crops=2, rng=rng)
    np.testing.assert_allclose(whole[0], grid.mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(ConfigError, match="at least 1"):
        crop_embeddings(grid, crop=0, n_crops=3, rng=rng)


def test_patch_label_is_majority_of_native_pixels():
    mask = np.zeros((28, 42), dtype=np.uint8)
    mask[0:14, 0:14] = 1  # patch (0, 0) fully foreground
    mask[0:14, 14:20] = 1  # patch (0, 1): 6 of 14 columns, under half
    mask[14:28, 28:37] = 1  # patch (1, 2): 9 of 14 columns, over half
    labels = patch_labels(mask, (2, 3))
    assert labels.tolist() == [True, False, False, False, False, True]
    with pytest.raises(DataError, match="2-D mask"):
        patch_labels(np.zeros((2, 2, 2)), (1, 1))
