"""The from-scratch baselines by name: a table light enough for configs to read without loading torch.

``--backbone unet`` selects one wherever a backbone is selected; :mod:`emfm.backbones.scratch` builds the
empty backbone that stands in for it and :mod:`emfm.models.heads.unet` the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScratchModel:
    """A from-scratch baseline: the head that is the whole network, and the side its sizes divide.

    Attributes:
        name: what ``--backbone`` takes and every table shows.
        head: the registered head that holds the network.
        multiple: network sides must be multiples of it (a U-Net's four 2x poolings: 16).
        summary: one line for listings.
    """

    name: str
    head: str
    multiple: int
    summary: str


SCRATCH_MODELS: dict[str, ScratchModel] = {
    m.name: m
    for m in (
        ScratchModel("unet", "unet", 16, "2D U-Net from scratch (MONAI BasicUNet, widths 32-256, 2.0 M parameters)"),
        ScratchModel(
            "unet-small", "unet-small", 16, "2D U-Net from scratch at half width (widths 16-128, 0.5 M parameters)"
        ),
    )
}

#: The ``weights_id`` of every from-scratch model: there are no pretrained weights to identify.
NO_WEIGHTS = "none (trained from scratch)"


def is_scratch_model(name: str | None) -> bool:
    """Whether ``name`` is a from-scratch baseline rather than a foundation-model backbone."""
    return str(name) in SCRATCH_MODELS
