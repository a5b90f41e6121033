"""The exported network: grey intensities in [0, 1] at the network's size -> P(foreground), mask, logits.

This file is also the ``pytorch_state_dict`` architecture of the bioimage.io package (copied into it as
``architecture.py``): bioimage.io loads it as a stand-alone module, calls :func:`build_segmenter` with the
keyword arguments recorded in the package, and loads the package's state dict into the result. So it
imports emfm by absolute names only, and builds the network from data alone (the backbone's transformers
configuration, the head's name and sizes), never from a run directory or downloaded weights.

What is baked in, so that every consumer (bioimage.io, ONNX Runtime, ``emfm predict --model``) computes the
same thing from the same input: the grey slice repeated to three channels and normalised with the run's
mean/std (:func:`emfm.transforms.normalise`), the backbone (LoRA merged into its weights), the head, the
logits brought to the input's size (:class:`~emfm.models.segmenter.Segmenter`), and the two-class softmax
and argmax that ``emfm predict`` applies. What is not: the resize of a slice to the network's size and its
intensity rule, which depend on the slice (its size and dtype) and are declared beside the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

#: The network's outputs, in order: what bioimage.io's outputs and the ONNX graph's outputs are named.
OUTPUT_NAMES = ("probability", "mask", "logits")
INPUT_NAME = "unit"


class ExportedSegmenter(nn.Module):
    """A :class:`~emfm.models.segmenter.Segmenter` seen from a grey slice in [0, 1].

    Args:
        segmenter: the run's segmenter, in eval mode, LoRA merged, without in-model tiling (a tiled run's
            export takes one tile at a time: its consumers tile, with the declared halo).
        mean, std: the run's normalisation (``ModelInfo.mean`` / ``std``).

    ``forward(unit)`` takes (B, 1, H, W) float32 in [0, 1], H and W multiples of the patch size, and returns
    ``(probability (B, 1, H, W) float32, mask (B, 1, H, W) uint8, logits (B, 2, H, W) float32)``. The mask is
    the logits' argmax (ties go to background), as in evaluation; the state dict is the segmenter's own.
    """

    def __init__(self, segmenter: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.segmenter = segmenter
        # Not persistent: the state dict stays the segmenter's, and the constants come from the kwargs.
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the same arithmetic as emfm.transforms.normalise, so the pixels are bit for bit the same
        pixels = (unit.expand(-1, 3, -1, -1) - self.mean) / self.std
        logits = self.segmenter(pixels)
        probability = logits.softmax(1)[:, 1:2]
        mask = logits.argmax(1, keepdim=True).to(torch.uint8)
        return probability, mask, logits


def architecture_kwargs(backbone: nn.Module, info: Any) -> dict[str, Any]:
    """What :func:`build_segmenter` needs to rebuild a run's network, as plain JSON data.

    ``backbone`` is the run's (loaded) backbone; ``info`` its :class:`~emfm.models.checkpoint.ModelInfo`.
    """
    if backbone.family == "scratch":
        spec: dict[str, Any] = {"family": "scratch", "name": backbone.name}
    else:
        config = backbone.model.config.to_dict()
        config.pop("dtype", None)
        config.pop("torch_dtype", None)
        spec = {"family": backbone.family, "name": backbone.name, "config": config}
    return {
        "backbone": spec,
        "head": info.head,
        "in_channels": int(info.in_channels),
        "num_layers": max(1, len(info.layers)),
        "patch_size": int(info.patch_size),
        "layers": [int(j) for j in info.layers],
        "mean": [float(m) for m in info.mean],
        "std": [float(s) for s in info.std],
    }


def build_segmenter(
    backbone: Mapping[str, Any],
    head: str,
    in_channels: int,
    num_layers: int,
    patch_size: int,
    layers: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> ExportedSegmenter:
    """The exported network with untrained weights, for a state dict to be loaded into (bioimage.io's
    ``pytorch_state_dict`` architecture callable; :func:`architecture_kwargs` gives its arguments)."""
    from emfm.models.heads import create_head
    from emfm.models.segmenter import Segmenter

    net = create_head(head, in_channels, num_layers=num_layers, patch_size=patch_size)
    segmenter = Segmenter(net, _backbone_from_spec(backbone), layers=layers).eval()
    return ExportedSegmenter(segmenter, mean, std).eval()


def _backbone_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """A family's backbone around a transformers model built from its configuration (no weights read)."""
    if spec["family"] == "scratch":
        from emfm.backbones import create_backbone

        return create_backbone(spec["name"])
    import transformers

    from emfm.backbones._registry import FAMILIES

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights

    family = FAMILIES.get(spec["family"])
    model_class = getattr(transformers, family.model_class)
    config = model_class.config_class.from_dict(dict(spec["config"]))
    with no_init_weights():  # the state dict overwrites every weight
        model = model_class(config)
    return family(model.float().eval(), name=spec["name"], weights_id="exported", source="exported emfm model")
