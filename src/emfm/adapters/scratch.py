"""Training a from-scratch model (``--backbone unet``): every weight is the head's and trains on pixels.

There is no pretrained backbone to freeze or adapt (:mod:`emfm.backbones.scratch`), so nothing is cached
and nothing of a backbone goes into the checkpoint; the adapter exists so that a baseline runs through the
same loop, crops, augmentation, loss and early stopping as the foundation-model runs.
"""

from __future__ import annotations

from emfm.adapters._base import Adapter, register_adapter


@register_adapter
class Scratch(Adapter):
    """The whole network (a U-Net) trains from random initialisation on the pixels."""

    name = "scratch"
    summary = "no pretrained backbone: a from-scratch model (e.g. --backbone unet) trained on pixels"
    trains_on = "pixels"
