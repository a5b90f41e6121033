"""Two views of each target crop: the clean one the teacher labels, an honestly augmented one the student learns.

A frozen run's head reads token grids cached from the unaugmented slice, so the only perturbations that do
not lie to it are those of what is computed from the crop itself (:mod:`emfm.train.augment`): intensity
changes (contrast, scale, noise, blur: :class:`~emfm.train.augment.IntensityAugment`) on the pixels a head
reads, and dropout of whole feature channels of the grids (the feature perturbation of UniMatch, Yang et al.
2023, "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic Segmentation"). A token grid is never
flipped or rotated: a ViT's tokens are not equivariant to that. A run that encodes live (LoRA, a from-scratch
U-Net) encodes the augmented pixels themselves, so there the intensity change reaches the backbone too.

Crops are windows on the patch lattice (:func:`emfm.train.crops.crop_origin`), cut alike from the grids and
the pixels; each is drawn from ``(seed, step, index)``, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emfm.train.augment import IntensityAugment
from emfm.train.crops import crop_origin
from emfm.transforms import Preprocessing, logits_to_size


@dataclass
class TargetSource:
    """One target slice at network size: its cached grids (frozen runs) and its [0, 1] pixels (pixel heads,
    live runs); the target has no mask."""

    size: tuple[int, int]
    grids: list[torch.Tensor] = field(default_factory=list)
    unit: torch.Tensor | None = None


def target_sources(images: Sequence[np.ndarray], prep: Preprocessing, *, grids: Callable[[int], list] | None,
                   want_pixels: bool) -> list[TargetSource]:
    """One :class:`TargetSource` per slice; ``grids(i)`` gives slice i's cached grids (None: the run encodes live)."""
    out = []
    for i, image in enumerate(images):
        size = prep.network_size(image.shape)
        out.append(TargetSource(
            size=(int(size[0]), int(size[1])), grids=list(grids(i)) if grids is not None else [],
            unit=prep.unit(image, size).half() if want_pixels else None,  # half: memory, not precision
        ))
    return out


class TargetViews:
    """Random target crops, each as a clean and an augmented view.

    Args:
        sources: the target's slices.
        crop: crop edge in network pixels (a multiple of ``patch``), or None for whole slices.
        patch: the backbone's patch size.
        preprocessing: the run's, for normalising pixels.
        intensity: the intensity augmentation of the student's pixels, or None.
        seed: base seed.
    """

    def __init__(self, sources: Sequence[TargetSource], *, crop: int | None, patch: int, preprocessing: Preprocessing,
                 intensity: IntensityAugment | None, seed: int) -> None:
        self.sources, self.crop, self.patch = list(sources), crop, int(patch)
        self.prep, self.intensity, self.seed = preprocessing, intensity, int(seed)

    def item(self, step: int, index: int) -> dict[str, Any]:
        """Crop ``index`` of step ``step``: ``grids`` (cached, or empty), ``clean`` and ``strong`` normalised pixels
        (None where the head reads none and the run encodes nothing live), and its ``size``."""
        rng = np.random.default_rng([self.seed, int(step), int(index)])
        src = self.sources[int(rng.integers(len(self.sources)))]
        h, w = src.size
        if self.crop is not None:
            y0, x0 = crop_origin(src.size, self.crop, self.patch, rng)
            y1, x1 = min(h, y0 + self.crop), min(w, x0 + self.crop)
        else:
            y0, x0, y1, x1 = 0, 0, h, w
        p = self.patch
        item: dict[str, Any] = {
            "grids": [g[:, y0 // p : y1 // p, x0 // p : x1 // p] for g in src.grids], "size": (y1 - y0, x1 - x0),
            "clean": None, "strong": None,
        }
        if src.unit is not None:
            unit = src.unit[y0:y1, x0:x1].float()
            item["clean"] = self.prep.normalise(unit)
            item["strong"] = self.prep.normalise(self.intensity(unit, rng)) if self.intensity else item["clean"]
        return item

    def batch(self, step: int, size: int) -> list[list[dict[str, Any]]]:
        """``size`` crops of step ``step``, grouped by crop size (each group runs as one batch)."""
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for index in range(size):
            item = self.item(step, index)
            groups.setdefault(item["size"], []).append(item)
        return list(groups.values())


def view_logits(
    encode: Callable[[torch.Tensor], list[torch.Tensor]],
    head: torch.nn.Module,
    group: Sequence[dict[str, Any]],
    view: str,
    *,
    device: Any,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Logits (B, K, H, W) at the crops' size for one group of items, from their ``clean`` or ``strong`` view.

    Cached grids are the same in both views; a live run's grids are ``encode``'s of the view's pixels (the
    backbone is fixed: no gradient through it). ``dropout`` drops whole feature channels of the grids.
    """
    pixels = torch.stack([it[view] for it in group]).to(device) if group[0][view] is not None else None
    if group[0]["grids"]:
        n = len(group[0]["grids"])
        grids = [torch.stack([it["grids"][j] for it in group]).to(device).float() for j in range(n)]
    else:
        with torch.no_grad():
            grids = [g.detach() for g in encode(pixels)]
    if dropout > 0:
        grids = [F.dropout2d(g, dropout, training=True) if g.shape[1] else g for g in grids]
    return logits_to_size(head(grids, pixels if getattr(head, "needs_pixels", False) else None), group[0]["size"])
