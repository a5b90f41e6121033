"""The dock widget napari opens from *Plugins > Segment mitochondria (emfm)*: a *Segment* and a *Compare* tab.

napari builds it from the manifest's widget contribution (``napari.yaml``), passing the viewer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QTabWidget

from emfm.napari.compare_tab import CompareTab
from emfm.napari.segment_tab import SegmentTab

if TYPE_CHECKING:
    import napari.viewer


class EmfmWidget(QTabWidget):
    """Segment a layer with an emfm run, or compare two runs on it.

    napari passes the viewer as ``napari_viewer`` (by that name). Anything with the viewer's layer API
    (a ``napari.components.ViewerModel``) serves too, which is how tests and scripts drive it headless.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.segment_tab = SegmentTab(napari_viewer)
        self.compare_tab = CompareTab(napari_viewer)
        self.addTab(self.segment_tab.native, "Segment")
        self.addTab(self.compare_tab.native, "Compare")
