"""The encode() machinery shared by every transformers vision transformer emfm wraps.

A family subclass says only where its blocks and final norm live and how to run its model; this class turns
pixels into the common :class:`~emfm.backbones._base.BackboneOutput`: class token and patch-token grid after
the final norm, register / storage tokens dropped, and chosen intermediate blocks normalised the same way
(as DINOv2's ``get_intermediate_layers(norm=True)``). Intermediate blocks are read with forward hooks, so
nothing extra is kept when none are asked for, and the hooks keep working after peft injects LoRA layers
into :attr:`model` (peft swaps the Linear layers inside the blocks, not the blocks).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from emfm.backbones._base import Backbone, BackboneOutput
from emfm.errors import CheckpointFormatError, ConfigError, DataError


def nearest_multiples(size: int, patch: int) -> list[int]:
    """The valid sizes either side of ``size`` (multiples of ``patch``, at least one patch)."""
    below = size // patch * patch
    return sorted({s for s in (below, below + patch) if s >= patch})


class TransformersViT(Backbone):
    """A transformers ViT behind the :class:`Backbone` interface.

    Class attributes (set by each family):
        family: the family name in :data:`~emfm.backbones._registry.FAMILIES`.
        title: the family's name for people (``DINOv2``).
        model_types: ``config.json`` ``model_type`` values this family loads.
        model_class: the transformers class name used to load a model directory.
        default_mean, default_std, default_lora_target_modules: facts shared by the family.
    """

    family: ClassVar[str]
    title: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    model_class: ClassVar[str]
    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]
    default_lora_target_modules: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        weights_id: str,
        source: str,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        lora_target_modules: Sequence[str] | None = None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if extras:  # a family that takes extra tensors pops them before calling this
            raise CheckpointFormatError(
                f"backbone {name!r}: tensors {sorted(extras)} do not belong to a {self.title} model"
            )
        self.model = model
        config = model.config
        self.name = name
        patch = config.patch_size
        self.patch_size = int(patch if isinstance(patch, int) else patch[0])
        self.embed_dim = int(config.hidden_size)
        self.num_layers = int(config.num_hidden_layers)
        self.num_register_tokens = int(getattr(config, "num_register_tokens", 0) or 0)
        self.mean = tuple(float(m) for m in (mean or self.default_mean))  # type: ignore[assignment]
        self.std = tuple(float(s) for s in (std or self.default_std))  # type: ignore[assignment]
        self.weights_id = weights_id
        self.source = source
        self.lora_target_modules = list(lora_target_modules or self.default_lora_target_modules)
        self._check_lora_targets()
        self.eval()

    # -- what each family provides -------------------------------------------------------------------------

    @abc.abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""

    @abc.abstractmethod
    def final_norm(self) -> nn.Module:
        """The norm applied to the last block's tokens."""

    @abc.abstractmethod
    def _normed_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """All tokens (class, registers, patches) after the final norm, (B, N, C)."""

    @classmethod
    def read_extras(cls, weight_files: list[Path]) -> dict[str, torch.Tensor]:
        """Tensors a family keeps beside :attr:`model`, read from a model directory's weight files."""
        return {}

    # -- the common interface ------------------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor, layers: Sequence[int] | None = None) -> BackboneOutput:
        """Encode normalised pixels (B, 3, H, W) into the final patch grid, CLS and chosen blocks.

        Args:
            pixels: float tensor, already normalised with :attr:`mean` / :attr:`std`; H and W multiples of
                :attr:`patch_size` (any size: position embeddings are interpolated as the family does).
            layers: block indices (0-based, negative from the end) whose patch tokens to return as well,
                each after the final norm.

        Returns:
            BackboneOutput with ``patch_grid`` (B, C, H/p, W/p), ``cls`` (B, C) and ``layers`` keyed by the
            indices as given.

        Raises:
            DataError: pixels of the wrong shape or type, or a side that is not a multiple of the patch.
            ConfigError: a layer index outside the model.
        """
        grid_h, grid_w = self.check_pixels(pixels)
        wanted = self._block_indices(layers)
        captured: dict[int, torch.Tensor] = {}
        handles = []
        blocks = self.blocks()
        for index in set(wanted.values()):

            def keep(_module: nn.Module, _inputs: Any, output: Any, index: int = index) -> None:
                captured[index] = output[0] if isinstance(output, tuple) else output

            handles.append(blocks[index].register_forward_hook(keep))
        try:
            tokens = self._normed_tokens(pixels)
        finally:
            for handle in handles:
                handle.remove()
        first_patch = 1 + self.num_register_tokens
        norm = self.final_norm()
        return BackboneOutput(
            patch_grid=self._to_grid(tokens[:, first_patch:], grid_h, grid_w),
            cls=tokens[:, 0],
            layers={
                key: self._to_grid(norm(captured[index])[:, first_patch:], grid_h, grid_w)
                for key, index in wanted.items()
            },
        )

    def check_pixels(self, pixels: torch.Tensor) -> tuple[int, int]:
        """Validate a batch before spending compute on it; return the patch grid (H/p, W/p)."""
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise DataError(
                f"backbone {self.name!r} expects pixels shaped (B, 3, H, W), got {shape}; "
                "repeat grey images to 3 channels and add a batch dimension"
            )
        if not pixels.is_floating_point():
            raise DataError(
                f"backbone {self.name!r} expects float pixels normalised with mean {self.mean} and std "
                f"{self.std}, got dtype {pixels.dtype}; convert to float and normalise first"
            )
        height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
        bad = [(side, size) for side, size in (("height", height), ("width", width)) if size % self.patch_size]
        if bad:
            details = "; ".join(
                f"{side} {size} -> nearest valid {' or '.join(map(str, nearest_multiples(size, self.patch_size)))}"
                for side, size in bad
            )
            raise DataError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size} of backbone "
                f"{self.name!r} ({details}); resize, crop or pad to a multiple of {self.patch_size}"
            )
        return height // self.patch_size, width // self.patch_size

    def _block_indices(self, layers: Sequence[int] | None) -> dict[int, int]:
        if not layers:
            return {}
        resolved = {}
        for index in layers:
            if not isinstance(index, int) or not -self.num_layers <= index < self.num_layers:
                raise ConfigError(
                    f"layer {index!r} does not exist in backbone {self.name!r}, which has {self.num_layers} "
                    f"blocks; use 0..{self.num_layers - 1} or -1..-{self.num_layers}"
                )
            resolved[index] = index % self.num_layers
        return resolved

    @staticmethod
    def _to_grid(tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        batch, count, channels = tokens.shape
        if count != grid_h * grid_w:  # a family that adds tokens we did not account for
            raise DataError(f"expected {grid_h}x{grid_w} patch tokens, the model returned {count}")
        return tokens.transpose(1, 2).reshape(batch, channels, grid_h, grid_w)

    def _check_lora_targets(self) -> None:
        linear_names = [name for name, module in self.model.named_modules() if isinstance(module, nn.Linear)]
        missing = [
            target
            for target in self.lora_target_modules
            if not any(name == target or name.endswith("." + target) for name in linear_names)
        ]
        if missing:
            raise ConfigError(
                f"LoRA target modules {missing} match no Linear layer of {type(self.model).__name__} "
                f"(backbone {self.name!r}); emfm expects the module names of transformers >= 5"
            )
