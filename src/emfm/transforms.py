"""From stored EM slices to backbone input, and from logits back to masks.

The study's protocol (docs/protocol.md, "Input"): grey slices repeated to three channels, normalised
with a mean/std, the whole slice resized so that its longest edge is ``resolution`` and each side
floored to a multiple of the patch size (bicubic for images, nearest for masks). The slice is resized
straight to that floored size rather than resized and cropped, so no part of a mask is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from emfm.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Intensity = Literal["dtype", "minmax"]
INTENSITIES = ("dtype", "minmax")


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


def scaled_size(shape: Sequence[int], scale: float, patch: int) -> tuple[int, int]:
    """The network size (H, W) of a native ``shape`` (h, w) slice at pixel ``scale`` (1.0 = native).

    Each side becomes ``side * scale`` rounded to the nearest multiple of ``patch`` (at least one patch),
    independently, so the resize to this size is the only interpolation the slice goes through, and the
    aspect ratio is distorted by less than one patch per side (rounding instead of cropping keeps every
    pixel of the mask). Lucchi++ 768 x 1024 at 1.0 with patch 14 -> (770, 1022); VNC 1024 x 1024 -> (1022, 1022).

    Raises:
        ConfigError: ``scale`` not a positive finite number, or ``patch`` not positive.
    """
    import math

    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"pixel scale must be a positive number (1.0 = native resolution), got {scale}")
    if patch <= 0:
        raise ConfigError(f"patch size must be positive, got {patch}")
    h, w = (max(1, math.floor(int(side) * scale / patch + 0.5)) * patch for side in shape[:2])
    return h, w


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


def unit_at_size(image: np.ndarray, size: Sequence[int], intensity: Intensity = "dtype"):
    """A 2-D slice -> [0, 1] float tensor (H, W) at ``size``, bicubic (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    arr = torch.from_numpy(to_unit_float(image, intensity))[None, None]
    h, w = int(size[0]), int(size[1])
    if arr.shape[-2:] != (h, w):
        shrink = h < arr.shape[-2] or w < arr.shape[-1]
        arr = F.interpolate(arr, size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)
        arr = arr.clamp_(0.0, 1.0)
    return arr[0, 0]


def normalise(unit, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """A [0, 1] (H, W) tensor -> grey repeated to three channels and normalised, (3, H, W)."""
    import torch

    h, w = unit.shape[-2:]
    arr = unit.float().reshape(1, h, w).expand(3, h, w)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((arr - m) / s).contiguous()


def image_to_tensor(
    image: np.ndarray,
    size: Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    intensity: Intensity = "dtype",
):
    """A 2-D slice -> normalised float tensor (3, H, W) at ``size``, bicubic (antialiased when shrinking)."""
    return normalise(unit_at_size(image, size, intensity), mean, std)


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


GEOMETRIC_VARIANTS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose")


def geometric_variant(array: np.ndarray, variant: str) -> np.ndarray:
    """One of the eight flips and 90-degree rotations (the dihedral group) of a 2-D slice or mask.

    Frozen runs augment by encoding the transformed slice (its features are cached per variant),
    never by rotating a token grid: a ViT's tokens are not equivariant to flips.
    """
    ops = {
        "identity": lambda a: a,
        "hflip": lambda a: a[:, ::-1],
        "vflip": lambda a: a[::-1, :],
        "rot90": lambda a: np.rot90(a, 1),
        "rot180": lambda a: np.rot90(a, 2),
        "rot270": lambda a: np.rot90(a, 3),
        "transpose": lambda a: a.T,
        "antitranspose": lambda a: np.rot90(a, 2).T,
    }
    if variant not in ops:
        raise ConfigError(f"unknown augmentation variant {variant!r}; use one of {', '.join(GEOMETRIC_VARIANTS)}")
    return np.ascontiguousarray(ops[variant](array))


@dataclass(frozen=True)
class Preprocessing:
    """How a stored slice becomes network input: the one definition that training, evaluation,
    prediction and any exporter share, so a trained model is always fed what it was trained on.

    Two ways to size a slice: the study's whole-slice resize (``scale`` None: the longest edge becomes
    ``resolution``), or a pixel ``scale`` (1.0 = native) at which the slice is encoded through
    overlapping ``tile``-px tiles (:mod:`emfm.tiled`), so large slices keep their detail.
    A checkpoint records it (:class:`~emfm.models.checkpoint.ModelInfo`).
    """

    resolution: int
    patch_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    intensity: Intensity = "dtype"
    scale: float | None = None
    tile: int | None = None
    overlap: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    @property
    def tiled(self) -> bool:
        return self.scale is not None

    def network_size(self, shape: Sequence[int]) -> tuple[int, int]:
        """The (H, W) a slice of ``shape`` is resized to: :func:`resized_shape`, or at ``scale``."""
        if self.scale is None:
            return resized_shape(shape, self.resolution, self.patch_size)
        return scaled_size(shape, self.scale, self.patch_size)

    def pixels(self, image: np.ndarray, size: Sequence[int] | None = None):
        """A 2-D slice -> normalised (3, H, W) float tensor at ``size`` (default :meth:`network_size`)."""
        target = self.network_size(image.shape) if size is None else size
        return image_to_tensor(image, target, self.mean, self.std, intensity=self.intensity)

    def unit(self, image: np.ndarray, size: Sequence[int] | None = None):
        """The slice as [0, 1] floats (H, W) at ``size``: :meth:`pixels` before normalisation, for
        crops and intensity augmentation that then call :meth:`normalise`."""
        return unit_at_size(image, self.network_size(image.shape) if size is None else size, self.intensity)

    def normalise(self, unit):
        """[0, 1] (H, W) -> the normalised (3, H, W) network input."""
        return normalise(unit, self.mean, self.std)

    def mask(self, mask: np.ndarray, size: Sequence[int] | None = None):
        """A 2-D {0,1} mask -> (H, W) LongTensor at ``size`` (default :meth:`network_size`)."""
        return mask_to_tensor(mask, self.network_size(mask.shape) if size is None else size)

    def cache_fields(self) -> dict:
        """What besides the backbone and the image fixes the features (the feature cache's key)."""
        out = {"resolution": int(self.resolution), "mean": self.mean, "std": self.std, "intensity": self.intensity}
        if self.tiled:  # absent for the whole-slice resize, so those entries keep their old keys
            out["tiling"] = {"scale": float(self.scale), "tile": int(self.tile or 0), "overlap": int(self.overlap or 0)}
        return out
