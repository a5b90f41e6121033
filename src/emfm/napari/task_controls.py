"""Run, Cancel, a progress bar and a message line: one task of :mod:`emfm.napari.tasks` at a time, off the GUI thread.

The task runs in a napari ``thread_worker`` (a ``GeneratorWorker``), so the viewer stays responsive;
each :class:`~emfm.napari.tasks.Progress` it yields moves the bar, and Cancel asks the worker to stop
at the next yield (between batches), after which nothing is added. Bad input and the user-fixable
problems a task returns as a :class:`~emfm.napari.tasks.Failure` become one line, here and as a napari
error notification, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from emfm.errors import EmfmError
from emfm.napari.tasks import Failure, Progress, Steps

log = logging.getLogger(__name__)


def _drive(steps: Steps) -> Steps:
    """A generator *function* around a generator, which is what ``create_worker`` makes a GeneratorWorker of."""
    return (yield from steps)


class TaskControls(Container):
    """Starts ``start()`` (a task generator) on Run and hands what it returns to ``show(result)``.

    ``start`` raises an :class:`~emfm.errors.EmfmError` for input the user must fix first; ``show``
    adds the layers and returns the line to display. ``worker`` is the last worker started (or None).
    """

    def __init__(self, run_text: str, start: Callable[[], Steps], show: Callable[[Any], str]) -> None:
        self._start, self._show = start, show
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.message = Label(value="")
        self.message.native.setWordWrap(True)  # messages are whole sentences
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[buttons, self.progress, self.message], labels=False)
        self.margins = (0, 0, 0, 0)
        self.worker: Any = None
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(lambda *_: self.cancel())

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    def run(self) -> Any:
        """Start the task (unless one is running); the worker, or None when the input was refused."""
        from napari.qt.threading import create_worker

        if self.running:
            return None
        try:
            steps = self._start()
        except EmfmError as exc:
            self._fail(str(exc))
            return None
        worker = create_worker(_drive, steps, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(lambda: self._say("cancelled; nothing was added"))
        worker.errored.connect(lambda exc: self._say(f"failed: {type(exc).__name__}: {exc}"))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.value = 0
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._say("starting")
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.running:
            self.worker.quit()
            self._say("cancelling after this batch")

    def _on_progress(self, p: Progress) -> None:
        self.progress.max = max(p.total, 1)
        self.progress.value = p.done
        self._say(p.message)

    def _on_returned(self, result: Any) -> None:
        if isinstance(result, Failure):
            self._fail(result.message)
            return
        self.progress.value = self.progress.max
        self._say(self._show(result))

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        log.info("emfm: %s", message)
        self._say(message)
        show_error(f"emfm: {message}")

    def _say(self, text: str) -> None:
        self.message.value = text
