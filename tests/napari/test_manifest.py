"""The plugin's npe2 manifest: valid, installed through the entry point, and what napari offers from it."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
npe2 = pytest.importorskip("npe2")


def test_the_manifest_validates_as_npe2_validate_emfm_does():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("emfm")  # found through the napari.manifest entry point
    manifest.validate_imports()  # every command's python_name imports (what `npe2 validate` checks)
    contributions = manifest.contributions
    assert manifest.name == "emfm"
    assert [w.display_name for w in contributions.widgets] == ["Segment mitochondria"]
    assert {"*.zarr", "*.tif"} <= set(contributions.readers[0].filename_patterns)
    assert contributions.writers[0].layer_types == ["labels"]


def test_the_widget_opens_from_the_plugins_menu(napari_window):
    from emfm.napari.widget import EmfmWidget

    _, widget = napari_window.window.add_plugin_dock_widget("emfm", "Segment mitochondria")
    assert isinstance(widget, EmfmWidget)
    assert [widget.tabText(i) for i in range(widget.count())] == ["Segment", "Compare"]
    import numpy as np

    napari_window.add_image(np.zeros((4, 8, 8), np.uint8), name="EM")  # the widget sees the viewer's layers
    assert [layer.name for layer in widget.segment_tab.image.choices] == ["EM"]
