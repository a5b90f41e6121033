"""The *Segment* tab: a run (or exported model) on an image layer; its mask and probability come back as layers."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container

from emfm.napari import tasks
from emfm.napari.controls import ModelPicker, SettingsControls, SliceRange, chosen_image, form, image_layer_picker
from emfm.napari.layers import add_segmentation, mask_name, probability_name
from emfm.napari.task_controls import TaskControls


class SegmentTab(Container):
    """Choose a run, a layer and its slices, press Run: ``<run> mask`` (Labels) and ``<run> probability``
    (Image) are added over the slices predicted."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.model = ModelPicker("run")
        self.image = image_layer_picker(viewer)
        self.slices = SliceRange()
        self.settings = SettingsControls()
        self.task = TaskControls("Run", self._start, self._show)
        super().__init__(widgets=[form(self.model, self.image, self.slices, self.settings), self.task], labels=False)
        self.native.layout().addStretch(1)  # keep the form at the top of a tall dock
        self.image.changed.connect(self.slices.show_for)
        self.slices.show_for(self.image.value)
        self._layer: Any = None

    def _start(self) -> tasks.Steps:
        run = self.model.path
        self._layer, data = chosen_image(self.image)
        return tasks.segment(run, data, self.slices.value(), self.settings.value(), image_name=self._layer.name)

    def _show(self, seg: tasks.Segmentation) -> str:
        add_segmentation(self.viewer, self._layer, seg)
        n = 1 if seg.masks.ndim == 2 else seg.masks.shape[0]
        return f"added '{mask_name(seg.name)}' and '{probability_name(seg.name)}' ({n} slice{'s' * (n != 1)})"
