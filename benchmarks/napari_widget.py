"""The napari widget's wall time against ``emfm predict``'s on the same run and volume, side by side in one run.

Both predict the same slices with the same settings, each loading the run's model itself, as a user's
click or command does:

- ``emfm predict``: the command line's own entry (``emfm.cli.main``), in this process, reading the
  volume from disk and writing a zarr mask and float16 probabilities (what the widget also makes);
- the widget: the real :class:`~emfm.napari.widget.EmfmWidget` and its napari ``thread_worker``, offscreen,
  from the Run click until its mask and probability layers are in the viewer (the image already loaded
  as a layer, as it is for a microscopist). The viewer is a ``napari.components.ViewerModel`` (napari's
  viewer without its canvas), so no display or OpenGL is needed and drawing is not counted.

After one untimed warm-up call of each (imports, file caches), they alternate, ``--repeats`` times each,
so both see the same load on the machine. Prints the median seconds of each, the ratio widget / predict,
and whether their masks are identical (they must be).

    python benchmarks/napari_widget.py --run DIR --input VOLUME [--slices N] [--repeats 3]
        [--batch-size 4] [--device cpu|cuda]

``--input`` is anything ``emfm predict`` reads; ``--slices N`` takes its first N slices (written to a
temporary TIFF that both then use). Needs ``pip install -e '.[napari]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def load_volume(spec: str, slices: int | None, where: Path) -> tuple[np.ndarray, str]:
    """The volume (its first ``slices``) in memory, and the input spec that holds exactly those slices."""
    import tifffile

    from emfm.data import open_volume

    with open_volume(spec) as volume:
        n = len(volume) if slices is None else min(slices, len(volume))
        stack = np.stack([volume[z] for z in range(n)])
        if n == len(volume):
            return stack, spec
    tifffile.imwrite(where / "input.tif", stack, photometric="minisblack")
    return stack, str(where / "input.tif")


def time_predict(run: str, spec: str, out: Path, batch_size: int, device: str | None) -> float:
    """Seconds of one ``emfm predict`` (its printed summary swallowed)."""
    from emfm.cli import main

    argv = ["predict", "--run", run, "--input", spec, "--output", str(out / "mask.zarr"), "--probabilities",
            str(out / "p.zarr"), "--overwrite", "--no-progress", "--batch-size", str(batch_size)]
    argv += ["--device", device] if device else []
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"emfm predict failed with exit code {code}")
    return seconds


def time_widget(app, run: str, stack: np.ndarray, batch_size: int, device: str | None) -> tuple[float, np.ndarray]:
    """Seconds from the widget's Run click to its layers being in the viewer, and the mask it added."""
    from napari.components import ViewerModel
    from qtpy.QtCore import QEventLoop, QTimer

    from emfm.napari.widget import EmfmWidget

    viewer = ViewerModel()
    widget = EmfmWidget(viewer)
    tab = widget.segment_tab
    layer = viewer.add_image(stack, name="EM")
    tab.model.set_path(run)
    tab.image.reset_choices()
    tab.image.value = layer
    tab.settings.batch_size.value = batch_size
    tab.settings.device.value = device or "auto"
    loop, poll = QEventLoop(), QTimer()
    poll.timeout.connect(lambda: loop.quit() if tab.task.run_button.enabled else None)
    started = time.perf_counter()
    tab.task.run_button.native.click()
    poll.start(5)  # the event loop sleeps between checks, so polling takes no CPU from the worker
    loop.exec()
    seconds = time.perf_counter() - started
    poll.stop()
    names = [lay.name for lay in viewer.layers]
    mask_name = f"{Path(run).name} mask"
    if mask_name not in names:
        raise SystemExit(f"the widget added no mask: {tab.task.message.value}")
    mask = np.asarray(viewer.layers[mask_name].data)
    widget.deleteLater()
    return seconds, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory of `emfm train` (or an `emfm export` file)")
    parser.add_argument("--input", required=True, help="volume, as `emfm predict --input` takes it")
    parser.add_argument("--slices", type=int, help="only the first N slices")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", help="cpu, cuda... (default: cuda when available)")
    args = parser.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    from emfm.data import open_volume

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        stack, spec = load_volume(args.input, args.slices, where)
        print(f"run {args.run}; {stack.shape[0]} slices of {stack.shape[1]} x {stack.shape[2]} {stack.dtype}")
        cli, gui, masks = [], [], None
        time_predict(args.run, spec, where, args.batch_size, args.device)  # warm-up: first imports, caches
        time_widget(app, args.run, stack, args.batch_size, args.device)
        for _ in range(args.repeats):
            cli.append(time_predict(args.run, spec, where, args.batch_size, args.device))
            seconds, masks = time_widget(app, args.run, stack, args.batch_size, args.device)
            gui.append(seconds)
        with open_volume(str(where / "mask.zarr")) as out:
            cli_masks = np.stack([out[z] for z in range(len(out))])
    same = np.array_equal(cli_masks, masks.reshape(cli_masks.shape))
    p, w = statistics.median(cli), statistics.median(gui)
    print(f"emfm predict   median {p:8.2f} s  ({', '.join(f'{t:.2f}' for t in cli)})")
    print(f"napari widget  median {w:8.2f} s  ({', '.join(f'{t:.2f}' for t in gui)})")
    print(f"ratio widget / predict: {w / p:.3f}; masks identical: {same}")


if __name__ == "__main__":
    main()
