"""A screenshot of the napari widget at work, for the README: the image, the widget, the mask over it.

Opens napari with the volume as an image layer, docks the plugin's widget from its manifest (what
*Plugins > Segment mitochondria (emfm)* does), runs the run on the volume through the widget, shows the
middle predicted slice and saves a screenshot of the whole window.

    python docs/screenshot_napari.py --run DIR --input VOLUME --out docs/napari_widget.png [--slices N]

Rendering, headless: Qt's ``offscreen`` platform has no OpenGL context of its own (napari's canvas then
fails to draw its first layer), and even with one borrowed from an X display it leaves the canvas black
in a window grab. What renders is a real X server without a screen: Xvfb with Mesa's software OpenGL,
i.e. on Debian ``apt-get install xvfb xauth libgl1-mesa-dri`` (plus the Qt xcb libraries .ci/run
installs), and ``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshot_napari.py ...``. Without
``$DISPLAY`` this script re-runs itself that way when ``xvfb-run`` is there. It checks that the canvas
is not blank before saving.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

_RERUN = "EMFM_SCREENSHOT_UNDER_XVFB"


def ensure_display() -> None:
    """Re-run under xvfb-run when there is no display; say what to install when that is not there."""
    if os.environ.get("DISPLAY") or os.environ.get(_RERUN):
        return
    if shutil.which("xvfb-run") is None:
        raise SystemExit("no display: install Xvfb (Debian: apt-get install xvfb xauth libgl1-mesa-dri) "
                         "or run this on a desktop")
    os.environ[_RERUN] = "1"
    os.environ.pop("QT_QPA_PLATFORM", None)  # offscreen would leave the canvas black
    argv = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    os.execvp(argv[0], argv)


def load_stack(spec: str, slices: int | None) -> np.ndarray:
    from emfm.data import open_volume

    with open_volume(spec) as volume:
        n = len(volume) if slices is None else min(slices, len(volume))
        return np.stack([volume[z] for z in range(n)])


def wait_for(app, done, timeout_s: float = 3600.0) -> None:
    """Run Qt's event loop until ``done()`` holds (checked every 20 ms, sleeping in between)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop, poll, stop = QEventLoop(), QTimer(), QTimer()
    poll.timeout.connect(lambda: loop.quit() if done() else None)
    stop.setSingleShot(True)
    stop.timeout.connect(loop.quit)
    poll.start(20)
    stop.start(int(timeout_s * 1000))
    loop.exec()
    poll.stop()
    if not done():
        raise SystemExit(f"gave up after {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory of `emfm train` (or an `emfm export` file)")
    parser.add_argument("--input", required=True, help="volume, as `emfm predict --input` takes it")
    parser.add_argument("--out", default="docs/napari_widget.png", help="PNG to write")
    parser.add_argument("--slices", type=int, default=8, help="first N slices of the volume (default 8)")
    parser.add_argument("--device", help="cpu, cuda... (default: cuda when available)")
    args = parser.parse_args(argv)
    ensure_display()

    import imageio.v3 as iio
    import napari

    stack = load_stack(args.input, args.slices)
    viewer = napari.Viewer(title="emfm in napari", show=True)
    viewer.window.resize(1500, 900)
    viewer.add_image(stack, name=Path(args.input).name.split(":")[0])
    _, widget = viewer.window.add_plugin_dock_widget("emfm", "Segment mitochondria")
    tab = widget.segment_tab
    tab.model.set_path(args.run)
    tab.settings.device.value = args.device or "auto"
    app = napari.qt.get_qapp()
    tab.task.run_button.native.click()
    wait_for(app, lambda: tab.task.run_button.enabled)
    if not any(layer.name.endswith(" mask") for layer in viewer.layers):
        raise SystemExit(f"the widget added no mask: {tab.task.message.value}")
    viewer.dims.set_current_step(0, stack.shape[0] // 2)
    viewer.reset_view()
    wait_for(app, lambda: True, 0.5)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    if np.ptp(canvas[..., :3]) == 0:
        raise SystemExit("the canvas rendered blank: run under Xvfb (see this script's docstring), not offscreen")
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, shot)
    print(f"wrote {args.out} ({shot.shape[1]} x {shot.shape[0]}); {tab.task.message.value}")
    viewer.close()


if __name__ == "__main__":
    main()
