"""The *Compare* tab: two runs on the same layer, their masks and where they disagree, with the fraction."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label

from emfm.napari import tasks
from emfm.napari.compare import ONLY_A, ONLY_B
from emfm.napari.controls import ModelPicker, SettingsControls, SliceRange, chosen_image, form, image_layer_picker
from emfm.napari.layers import DISAGREEMENT_COLOURS, add_comparison, disagreement_name
from emfm.napari.task_controls import TaskControls


def fraction_text(comparison: tasks.Comparison) -> str:
    """``disagree on 3.21 % of pixels (only A 1.10 %, only B 2.11 %)``."""
    labels = comparison.disagreement
    only_a = float((labels == ONLY_A).mean()) if labels.size else 0.0
    return (
        f"disagree on {100 * comparison.fraction:.2f} % of pixels "
        f"(only {comparison.a.name} {100 * only_a:.2f} %, only {comparison.b.name} "
        f"{100 * (comparison.fraction - only_a):.2f} %)"
    )


class CompareTab(Container):
    """Choose runs A and B, a layer and its slices, press Compare: both masks and a disagreement layer
    (1 = only A, 2 = only B) are added, and the fraction of disagreeing pixels is shown here."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.model_a = ModelPicker("run A")
        self.model_b = ModelPicker("run B")
        self.image = image_layer_picker(viewer)
        self.slices = SliceRange()
        self.settings = SettingsControls()
        self.task = TaskControls("Compare", self._start, self._show)
        legend = Label(value=f"{DISAGREEMENT_COLOURS[ONLY_A]}: only A, {DISAGREEMENT_COLOURS[ONLY_B]}: only B")
        self.fraction = Label(value="")
        self.fraction.native.setWordWrap(True)
        inputs = form(self.model_a, self.model_b, self.image, self.slices, self.settings)
        super().__init__(widgets=[inputs, self.task, legend, self.fraction], labels=False)
        self.native.layout().addStretch(1)  # keep the form at the top of a tall dock
        self.image.changed.connect(self.slices.show_for)
        self.slices.show_for(self.image.value)
        self._layer: Any = None

    def _start(self) -> tasks.Steps:
        run_a, run_b = self.model_a.path, self.model_b.path
        self._layer, data = chosen_image(self.image)
        self.fraction.value = ""
        return tasks.compare(run_a, run_b, data, self.slices.value(), self.settings.value(),
                             image_name=self._layer.name)

    def _show(self, comparison: tasks.Comparison) -> str:
        add_comparison(self.viewer, self._layer, comparison)
        self.fraction.value = fraction_text(comparison)
        return f"added '{disagreement_name(comparison.a.name, comparison.b.name)}'"
