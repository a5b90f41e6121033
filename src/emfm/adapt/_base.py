"""What every way of adapting a trained run to unlabelled target data provides, and the registry of them.

A user with a trained run and a volume of their own, without masks, wants the model to fit that volume.
Each method here is one registered class with typed settings (``--set KEY=VALUE``), like the adapters
(:mod:`emfm.adapters`) and the alignment methods (:mod:`emfm.align`): :func:`emfm.adapt.run.adapt_run`
asks it whether it can adapt a run (:meth:`AdaptMethod.check`, before anything is read or written) and
then for the adapted model (:meth:`AdaptMethod.adapt`), never its name. A method changes the head only;
the backbone and what the adapter keeps of it (LoRA's matrices) are never touched, and no method is ever
handed the target's labels: a target is images only (:class:`~emfm.adapt.target.TargetSet`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from emfm._registry import Registry
from emfm._settings import Settings

if TYPE_CHECKING:
    from emfm.adapt.source import SourceRun
    from emfm.adapt.target import TargetSet
    from emfm.models.checkpoint import ModelInfo
    from emfm.models.segmenter import Segmenter


@dataclass(frozen=True)
class NoSettings(Settings):
    """Settings of a method that has none."""

    what = "adapt setting"


@dataclass
class Adapted:
    """What a method hands back: the adapted segmenter (its head changed), the :class:`ModelInfo` to write
    with it (the source's, or with the target as its one domain for per-domain BatchNorm), the steps it
    took (forward passes for a method that does not train), one line saying what it did, and whatever else
    ``adapt.json`` should record about how it went."""

    segmenter: Segmenter
    info: ModelInfo
    steps: int
    summary: str = ""
    record: dict[str, Any] = field(default_factory=dict)


class AdaptMethod(abc.ABC):
    """One way of adapting a trained run to a target it has no labels for.

    Attributes:
        name: the registry name (``--method NAME``).
        summary: one line for ``--help`` and reports.
        source: the paper(s) the method follows, recorded in ``adapt.json``.
        settings_type: a frozen :class:`~emfm._settings.Settings` dataclass of the method's options.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""
    settings_type: ClassVar[type[Settings]] = NoSettings

    def __init__(self, settings: Settings | Mapping[str, Any] | None = None) -> None:
        if settings is None or isinstance(settings, Mapping):
            settings = self.settings_type.from_dict(settings or {})
        self.settings = settings

    def check(self, source: SourceRun) -> None:  # noqa: B027 (a hook: by default every run is accepted)
        """Refuse a run this method cannot adapt (a :class:`~emfm.errors.ConfigError` saying what to do
        instead); called before the target is read and before anything is written."""

    @abc.abstractmethod
    def adapt(self, source: SourceRun, target: TargetSet, *, progress: bool = True) -> Adapted:
        """The adapted model. ``source.segmenter`` may be changed in place: the run on disk never is."""

    def settings_dict(self) -> dict[str, Any]:
        return self.settings.to_dict()


ADAPT_METHODS: Registry[type[AdaptMethod]] = Registry("adaptation method")


def register_method(cls: type[AdaptMethod]) -> type[AdaptMethod]:
    """Class decorator: ``@register_method`` on an :class:`AdaptMethod` subclass with a ``name``."""
    return ADAPT_METHODS.register(cls.name, cls)
