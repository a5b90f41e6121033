"""From stored EM slices to backbone input, and from logits back to masks.

The study's protocol (docs/protocol.md, "Input"): grey slices repeated to three channels, normalised
with a mean/std, the whole slice resized so that its longest edge is ``resolution`` and each side
floored to a multiple of the patch size (bicubic for images, nearest for masks). The slice is resized
straight to that floored size rather than resized and cropped, so no part of a mask is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from emfm.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Intensity = Literal["dtype", "minmax"]


def resized_shape(shape: Sequence[int], resolution: int, patch_size: int) -> tuple[int, int]:
    """Size a (h, w) slice takes in the network: longest edge -> ``resolution``, sides floored to patches.

    Lucchi++ (768 x 1024) at 1022 px with patch 14 gives (756, 1022); with patch 16, (752, 1008).

    Raises:
        ConfigError: if ``resolution`` is smaller than one patch or the short side would vanish.
    """
    h, w = int(shape[0]), int(shape[1])
    if resolution < patch_size:
        raise ConfigError(
            f"resolution {resolution} px is smaller than the patch size {patch_size}; "
            f"use at least {patch_size} (the study uses 1022)"
        )
    scale = resolution / max(h, w)
    out = []
    for side in (h, w):
        scaled = int(round(side * scale))
        floored = (scaled // patch_size) * patch_size
        if floored == 0:
            raise ConfigError(
                f"a {h} x {w} slice at resolution {resolution} px leaves a side shorter than one "
                f"{patch_size}-px patch; raise --resolution"
            )
        out.append(floored)
    return out[0], out[1]


def to_unit_float(image: np.ndarray, intensity: Intensity = "dtype") -> np.ndarray:
    """Map a 2-D uint8/uint16 slice to float32 in [0, 1].

    ``dtype`` divides by the dtype's maximum (uint8: 255, uint16: 65535), which keeps the stored
    contrast; ``minmax`` stretches each slice to its own 0.5-99.5 percentile range, for 16-bit data
    that use only a small part of their range.
    """
    if image.ndim != 2:
        raise DataError(f"expected a 2-D grey slice, got an array of shape {image.shape}")
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    else:
        raise DataError(f"expected a uint8 or uint16 slice, got {image.dtype}; convert it to 8 or 16 bit")
    arr = image.astype(np.float32)
    if intensity == "dtype":
        return arr / scale
    if intensity == "minmax":
        lo, hi = np.percentile(arr, [0.5, 99.5])
        return np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    raise ConfigError(f"unknown intensity normalisation {intensity!r}; use 'dtype' or 'minmax'")


def image_to_tensor(
    image: np.ndarray,
    size: Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    intensity: Intensity = "dtype",
):
    """A 2-D slice -> normalised float tensor (3, H, W) at ``size``, bicubic (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    arr = torch.from_numpy(to_unit_float(image, intensity))[None, None]
    h, w = int(size[0]), int(size[1])
    if arr.shape[-2:] != (h, w):
        shrink = h < arr.shape[-2] or w < arr.shape[-1]
        arr = F.interpolate(arr, size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)
        arr = arr.clamp_(0.0, 1.0)
    arr = arr[0].expand(3, h, w)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((arr - m) / s).contiguous()


def mask_to_tensor(mask: np.ndarray, size: Sequence[int]):
    """A 2-D {0,1} mask -> LongTensor (H, W) at ``size`` by nearest-neighbour sampling."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None, None].float()
    h, w = int(size[0]), int(size[1])
    if t.shape[-2:] != (h, w):
        t = F.interpolate(t, size=(h, w), mode="nearest-exact")
    return t[0, 0].round().long()


def logits_to_size(logits, size: Sequence[int]):
    """Bilinearly resize logits (B, K, h, w) to ``size``: used to score at a mask's native size."""
    import torch.nn.functional as F

    if tuple(logits.shape[-2:]) == (int(size[0]), int(size[1])):
        return logits
    return F.interpolate(logits, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
