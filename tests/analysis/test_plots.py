"""The figures are written as PNGs, atomically."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emfm.analysis.plots import plot_distances, plot_pca_rgb, plot_pca_scatter, plot_probe_curve


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    coords = {"a": rng.normal(size=(20, 2)), "b": rng.normal(size=(5, 2)) + 2}
    p1 = plot_pca_scatter(coords, [0.4, 0.2], tmp_path / "pca.png", title="t")
    p2 = plot_pca_rgb(
        [
            {"dataset": "a", "slice_id": "0001", "image": rng.integers(0, 255, (60, 80)),
             "views": [{"label": "final", "rgb": rng.random((4, 6, 3)), "explained": [0.3, 0.2, 0.1]},
                       {"label": "block 1", "rgb": rng.random((4, 6, 3)), "explained": [0.4, 0.2, 0.1]}]},
            {"dataset": "b", "slice_id": "7", "image": rng.integers(0, 255, (60, 60)),
             "views": [{"label": "final", "rgb": rng.random((4, 4, 3)), "explained": [0.3, 0.2, 0.1]}]},
        ],
        tmp_path / "rgb.png",
        title="t",
    )
    p3 = plot_probe_curve(
        {"a": {"layers": [0, 1, 2], "iou": [0.2, None, 0.5], "trivial_iou": 0.1, "n_test_patches": 99}},
        tmp_path / "probe.png",
        title="t",
    )
    rows = [("a vs b", 3.0, 2.0, 4.0), ("a halves", 0.5, 0.2, 0.9)]
    p4 = plot_distances([{"title": "full", "rows": rows}], tmp_path / "fd.png", title="t")
    for p in (p1, p2, p3, p4):
        assert _is_png(p)
    assert not list(tmp_path.glob(".*tmp*"))


def test_distance_outside_its_interval_is_drawn(tmp_path):
    # The bootstrap of a biased statistic can sit wholly above the value itself.
    p = plot_distances([{"title": "full", "rows": [("a vs b", 1.0, 1.5, 2.0)]}], tmp_path / "fd.png", title="t")
    assert _is_png(p)
