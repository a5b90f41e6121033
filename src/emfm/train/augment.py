"""Intensity augmentation where it is honest: on pixels the model actually sees live.

A frozen backbone's features were computed once from the unaugmented slice, so changing the
contrast of a crop there would teach the head pixels its features never saw; intensity changes
therefore apply only to what is computed from the crop itself (a head's pixel branch, and LoRA runs,
which encode every step). MONAI's random intensity transforms do the work, seeded per crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityAugment:
    """Random contrast (gamma), scale, Gaussian noise and blur on a [0, 1] image crop.

    The ranges are mild on purpose: EM contrast varies between microscopes mostly by gamma and
    gain, and noise/blur by dwell time and focus; stronger changes make mitochondria ambiguous.
    """

    prob: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    scale: tuple[float, float] = (-0.15, 0.15)
    noise_std: float = 0.03
    blur_sigma: tuple[float, float] = (0.25, 1.0)

    def __call__(self, unit, rng: np.random.Generator):
        """``unit`` (H, W) float tensor in [0, 1] -> augmented copy, clipped to [0, 1]."""
        import monai.transforms as T
        import torch

        steps = [
            T.RandAdjustContrast(prob=self.prob, gamma=self.gamma),
            T.RandScaleIntensity(factors=self.scale, prob=self.prob),
            T.RandGaussianNoise(prob=self.prob, std=self.noise_std),
            T.RandGaussianSmooth(sigma_x=self.blur_sigma, sigma_y=self.blur_sigma, prob=self.prob / 2),
        ]
        out = unit[None].float()
        for step in steps:
            step.set_random_state(seed=int(rng.integers(2**31 - 1)))
            out = step(out)
        out = torch.as_tensor(out)
        return out[0].clamp_(0.0, 1.0)
