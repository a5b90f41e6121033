"""The frozen backbone: only the head trains, on features computed once and cached (the study's
"frozen + head" setting, protocol.md)."""

from __future__ import annotations

from emfm.adapters._base import Adapter, register_adapter


@register_adapter
class Frozen(Adapter):
    """No backbone parameter changes; every epoch reads the feature cache instead of the backbone."""

    name = "frozen"
    summary = "frozen backbone, head trained on cached features"
    trains_on = "features"
