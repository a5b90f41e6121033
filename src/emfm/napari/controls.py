"""The input controls both tabs share (magicgui widgets): which model, which layer, which slices, how.

Each control turns what the user set into what :mod:`emfm.napari.tasks` takes, and says in one line
what is missing (:meth:`ModelPicker.path`, :func:`chosen_image`), so a tab never starts a task on bad input.
A control owns its widgets and lists them in ``widgets``; a tab lays all of them out in one labelled
form (:func:`form`), so their labels line up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, SpinBox, Widget

from emfm.errors import ConfigError, DataError
from emfm.predict import PredictSettings

RUN_FOLDER, EXPORTED = "run folder", "exported model"
DEVICES = ("auto", "cpu", "cuda")


def form(*controls: Any) -> Container:
    """One labelled form of the widgets of ``controls`` (controls, or single widgets), top-aligned."""
    widgets: list[Widget] = []
    for control in controls:
        widgets.extend(getattr(control, "widgets", [control]))
    out = Container(widgets=widgets, labels=True)
    out.margins = (0, 0, 0, 0)
    return out


class ModelPicker:
    """A run folder (``emfm train --out``) or a model file of ``emfm export`` (.onnx, bioimage.io .zip)."""

    def __init__(self, label: str = "run") -> None:
        self.label_text = label
        self.kind = ComboBox(choices=[RUN_FOLDER, EXPORTED], value=RUN_FOLDER, label=f"{label} is a")
        self.file = FileEdit(mode="d", label=label)
        self.widgets = [self.kind, self.file]
        self.kind.changed.connect(self._on_kind)

    def _on_kind(self, kind: str) -> None:
        self.file.mode = "d" if kind == RUN_FOLDER else "r"
        self.file.filter = None if kind == RUN_FOLDER else "*.onnx *.zip"

    def set_path(self, path: str | Path) -> None:
        """Choose ``path`` (a run folder, or a model file: the kind follows)."""
        self.kind.value = EXPORTED if Path(path).suffix.lower() in (".onnx", ".zip") else RUN_FOLDER
        self.file.value = Path(path)

    @property
    def path(self) -> Path:
        """The chosen path.

        Raises:
            ConfigError: nothing chosen yet.
        """
        text = str(self.file.line_edit.value).strip()
        if not text:
            raise ConfigError(
                f"choose the {self.label_text} first: a run folder (the --out of `emfm train`) "
                "or a model file of `emfm export`"
            )
        return Path(text).expanduser()


def image_layer_picker(viewer: Any, label: str = "image") -> ComboBox:
    """A choice of the viewer's image layers, kept in step as layers are added, removed or reordered."""
    from napari.layers import Image

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]

    combo = ComboBox(label=label, choices=choices)
    events = (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered)

    def refresh(*_: Any) -> None:
        combo.reset_choices()

    def disconnect(*_: Any) -> None:  # a closed dock widget must not hear the viewer's layers any more
        for event in events:
            event.disconnect(refresh)

    for event in events:
        event.connect(refresh)
    combo.native.destroyed.connect(disconnect)
    return combo


def chosen_image(combo: ComboBox) -> tuple[Any, Any]:
    """The chosen image layer and the array to predict (level 0 of a multiscale image).

    Raises:
        ConfigError: no image layer; DataError: a colour (RGB) layer.
    """
    combo.reset_choices()
    layer = combo.value
    if layer is None:
        raise ConfigError("no image layer to segment: open an EM image (File > Open) or add one first")
    if layer.rgb:
        raise DataError(f"layer {layer.name!r} is RGB; emfm segments grey images: convert it to grey first")
    return layer, (layer.data[0] if layer.multiscale else layer.data)


class SliceRange:
    """The whole stack, or slices ``first`` to ``last`` (inclusive, as a microscopist counts them); a
    2-D layer is one slice and greys these out."""

    def __init__(self) -> None:
        self.whole = CheckBox(text="whole stack", value=True)
        self.first = SpinBox(label="first slice", min=0, max=0, enabled=False)
        self.last = SpinBox(label="last slice", min=0, max=0, enabled=False)
        self.widgets = [self.whole, self.first, self.last]
        self.whole.changed.connect(lambda _: self._enable())
        self._stack = False

    def show_for(self, layer: Any) -> None:
        """Fit the range to ``layer``: its slices for a stack, nothing to choose for a 2-D image."""
        depth = int(layer.data[0].shape[0] if layer.multiscale else layer.data.shape[0]) if layer else 0
        self._stack = layer is not None and layer.ndim == 3 and not layer.rgb
        top = max(depth - 1, 0) if self._stack else 0
        self.first.max = self.last.max = top
        self.first.value, self.last.value = min(self.first.value, top), top
        self.whole.enabled = self._stack
        self._enable()

    def _enable(self) -> None:
        pick = self._stack and not self.whole.value
        self.first.enabled = self.last.enabled = pick

    def value(self) -> tuple[int, int] | None:
        """``(start, stop)`` for :func:`emfm.predict.slice_range`, or None for all slices."""
        if not self._stack or self.whole.value:
            return None
        return int(self.first.value), int(self.last.value) + 1


class SettingsControls:
    """The ``emfm predict`` settings a viewer user may want: mode, batch size, device."""

    def __init__(self) -> None:
        self.mode = ComboBox(choices=["resize", "tile"], value="resize", label="mode",
                             tooltip="resize: the whole slice at the run's resolution, as in evaluation; "
                                     "tile: overlapping tiles at the run's training pixel size")
        self.batch_size = SpinBox(value=4, min=1, max=256, label="batch size")
        self.device = ComboBox(choices=list(DEVICES), value="auto", label="device")
        self.widgets = [self.mode, self.batch_size, self.device]

    def value(self) -> PredictSettings:
        device = None if self.device.value == "auto" else self.device.value
        return PredictSettings(mode=self.mode.value, batch_size=int(self.batch_size.value), device=device)
