"""What every way of adapting a backbone provides, and the registry that holds them.

Modelled on peft's one-config-one-tuner-per-method and Lightning's strategies: an adapter owns its
typed settings, how it prepares a backbone for training, whether it trains on cached features or on
pixels, and what it puts into and reads back from a checkpoint. Training, checkpoints, the CLI and
studies ask the adapter, never its name, so a new method is one module and one registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from emfm._registry import Registry
from emfm._settings import Settings

if TYPE_CHECKING:
    import torch

    from emfm.backbones._base import Backbone

TrainsOn = Literal["features", "pixels"]


@dataclass(frozen=True)
class NoSettings(Settings):
    """Settings of an adapter that has none."""


class Adapter:
    """One way of adapting a backbone (frozen, LoRA, ...).

    Subclasses set the class attributes and override the hooks they need; :meth:`prepare` must be
    idempotent on a fresh backbone, because loading a checkpoint calls it again before
    :meth:`load_state`.

    Attributes:
        name: the registry name (``--adapter NAME``).
        summary: one line for ``--help`` and reports.
        settings_type: a frozen :class:`~emfm._settings.Settings` dataclass of this adapter's options;
            each field ``f`` is also accepted as the flat config key / CLI flag ``<name>_f``.
        trains_on: ``features`` (the backbone is frozen; training reads the feature cache and never
            runs it) or ``pixels`` (the backbone runs on every step).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    settings_type: ClassVar[type[Settings]] = NoSettings
    trains_on: ClassVar[TrainsOn] = "pixels"

    def __init__(self, settings: Settings | Mapping[str, Any] | None = None) -> None:
        if settings is None or isinstance(settings, Mapping):
            settings = self.settings_type.from_dict(settings or {})
        self.settings = settings

    @property
    def uses_cached_features(self) -> bool:
        return self.trains_on == "features"

    def prepare(self, backbone: Backbone) -> int:
        """Ready ``backbone`` for training (freeze, inject adapters...); return the trainable
        parameters this adds inside the backbone."""
        for p in backbone.parameters():
            p.requires_grad_(False)
        return 0

    def state(self, backbone: Backbone) -> dict[str, torch.Tensor]:
        """The backbone-side tensors a checkpoint must keep (the backbone itself is never saved)."""
        return {}

    def load_state(self, backbone: Backbone, tensors: Mapping[str, torch.Tensor]) -> None:
        """Put :meth:`state`'s tensors back into a backbone that :meth:`prepare` has readied."""
        if tensors:
            from emfm.errors import CheckpointFormatError

            raise CheckpointFormatError(
                f"the checkpoint holds {len(tensors)} backbone tensors but adapter {self.name!r} keeps none; "
                f"it was written by another adapter: retrain the run"
            )

    def settings_dict(self) -> dict[str, Any]:
        return self.settings.to_dict()


ADAPTERS: Registry[type[Adapter]] = Registry("adapter")


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: ``@register_adapter`` on an :class:`Adapter` subclass with a ``name``."""
    return ADAPTERS.register(cls.name, cls)
