"""emfm.napari.writer: Labels saved as tif or zarr read back the same, directly and through napari."""

from __future__ import annotations

import numpy as np
import pytest

from emfm.errors import ConfigError
from emfm.napari.reader import get_reader
from emfm.napari.writer import write_labels

LABELS = np.array([[[0, 1, 2, 0], [2, 2, 1, 0]]] * 3, np.uint8)  # (3, 2, 4): a disagreement map


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_labels_round_trip_through_writer_and_reader(tmp_path, suffix):
    path = tmp_path / f"disagree{suffix}"
    meta = {"name": "a vs b disagreement", "scale": (50.0, 5.0, 5.0), "translate": (0.0, 0.0, 0.0)}
    assert write_labels(str(path), LABELS, meta) == [str(path)]
    (data, read_meta, kind), = get_reader(str(path))(str(path))
    assert kind == "labels"
    np.testing.assert_array_equal(np.asarray(data), LABELS)
    if suffix == ".zarr":  # zarr keeps the layer's name and placement
        assert read_meta["name"] == "a vs b disagreement" and read_meta["scale"] == (50.0, 5.0, 5.0)
    else:
        assert read_meta["name"] == "disagree"


def test_napari_saves_and_opens_labels_through_the_plugin(tmp_path):
    pytest.importorskip("napari")
    import napari
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()  # what napari's app does at start; a bare ViewerModel does not
    viewer = ViewerModel()
    viewer.add_labels(LABELS, name="mask", scale=(50.0, 5.0, 5.0))
    path = tmp_path / "mask.zarr"
    napari.save_layers(str(path), [viewer.layers["mask"]], plugin="emfm")
    viewer.layers.clear()
    viewer.open(str(path), plugin="emfm")
    (layer,) = viewer.layers
    assert type(layer).__name__ == "Labels" and layer.name == "mask"
    np.testing.assert_array_equal(layer.data, LABELS)
    np.testing.assert_allclose(layer.scale, (50.0, 5.0, 5.0))


def test_other_formats_and_folders_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown output extension '.png'"):
        write_labels(str(tmp_path / "mask.png"), LABELS, {})
    with pytest.raises(ConfigError, match="not OME-Zarr"):
        write_labels(str(tmp_path / "mask.ome.zarr"), LABELS, {})
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not a zarr store; refusing to replace it"):
        write_labels(str(tmp_path / "folder.zarr"), LABELS, {})
    assert (tmp_path / "folder.zarr" / "keep.txt").exists()
