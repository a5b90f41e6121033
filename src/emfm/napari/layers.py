"""Hand a task's result to the viewer: layers named after the run, lying over the image they came from.

A prediction of slices ``start ..`` of a stack is added with the image layer's own scale and
translation, shifted by ``start`` slices, so it overlays exactly the slices it was made from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emfm.napari.compare import ONLY_A, ONLY_B
from emfm.napari.tasks import Comparison, Segmentation

#: Colours of the disagreement labels (the *Compare* tab's legend names them).
DISAGREEMENT_COLOURS = {ONLY_A: "magenta", ONLY_B: "cyan"}


def mask_name(run: str) -> str:
    return f"{run} mask"


def probability_name(run: str) -> str:
    return f"{run} probability"


def disagreement_name(a: str, b: str) -> str:
    return f"{a} vs {b} disagreement"


def placement(image_layer: Any, start: int, ndim: int) -> dict[str, Any]:
    """``scale`` and ``translate`` that put an ``ndim``-D result of slices ``start ..`` over ``image_layer``."""
    scale = np.asarray(image_layer.scale, float)[-ndim:]
    translate = np.asarray(image_layer.translate, float)[-ndim:].copy()
    if ndim == 3:
        translate[0] += start * scale[0]
    return {"scale": tuple(scale), "translate": tuple(translate)}


def add_segmentation(viewer: Any, image_layer: Any, seg: Segmentation) -> list[Any]:
    """Add ``<run> probability`` (an Image, hidden: it would cover the EM image) and ``<run> mask`` (Labels)."""
    where = placement(image_layer, seg.start, seg.masks.ndim)
    added = []
    if seg.probability is not None:
        limits = (0, 255) if seg.probability.dtype == np.uint8 else (0.0, 1.0)
        added.append(viewer.add_image(
            seg.probability, name=probability_name(seg.name), colormap="magma", contrast_limits=limits,
            blending="additive", visible=False, **where,
        ))
    added.append(viewer.add_labels(seg.masks, name=mask_name(seg.name), opacity=0.5, **where))
    return added


def add_comparison(viewer: Any, image_layer: Any, comparison: Comparison) -> list[Any]:
    """Add both runs' masks (hidden) and their disagreement labels: 1 = only A, 2 = only B."""
    from napari.utils.colormaps import DirectLabelColormap

    a, b = comparison.a, comparison.b
    where = placement(image_layer, a.start, a.masks.ndim)
    colours = {None: "transparent", 0: "transparent", **DISAGREEMENT_COLOURS}
    return [
        viewer.add_labels(a.masks, name=mask_name(a.name), opacity=0.5, visible=False, **where),
        viewer.add_labels(b.masks, name=mask_name(b.name), opacity=0.5, visible=False, **where),
        viewer.add_labels(
            comparison.disagreement, name=disagreement_name(a.name, b.name), opacity=0.7,
            colormap=DirectLabelColormap(color_dict=colours), **where,
        ),
    ]
