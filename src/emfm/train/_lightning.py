"""What emfm needs around Lightning's ``Trainer.fit``: Ctrl-C as a KeyboardInterrupt, torch's shape
errors as settings to change, and each epoch reported to whoever shows progress.

Lightning catches Ctrl-C itself: it logs a line (which emfm's CLI does not show), ignores SIGINT from
then on, and calls ``sys.exit(1)``, so a user would see a silent exit 1 and a process that no longer
answers Ctrl-C. :func:`lightning_guard` turns that back into the KeyboardInterrupt it was, so the
caller can say what was kept and exit 130, and puts the SIGINT handler back.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from emfm.errors import ConfigError

#: ``on_epoch(epoch, max_epochs, seconds_per_epoch)``: the epoch under way (1-based), the most there can
#: be (early stopping may end sooner), and the mean time of the epochs done so far (None before the first).
EpochHook = Callable[[int, int, "float | None"], None]

_ONE_VALUE = "Expected more than 1 value per channel when training"


@contextmanager
def lightning_guard(config: Any) -> Iterator[None]:
    """Run ``trainer.fit`` inside this: see the module docstring; ``config`` is the run's TrainConfig."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # Lightning's sys.exit(1) after Ctrl-C
            raise KeyboardInterrupt from None
        raise
    except ValueError as exc:
        if _ONE_VALUE not in str(exc):
            raise
        raise ConfigError(
            f"the {config.head} head's BatchNorm got a training batch with one value per channel (one slice "
            f"whose patch grid is 1 x 1 where the head is coarsest): raise --resolution (now {config.resolution}) "
            f"for more patches, or --batch-size (now {config.batch_size}) above 1"
        ) from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


def epoch_callback(on_epoch: EpochHook):
    """A Lightning callback that calls ``on_epoch`` as each training epoch starts."""
    import lightning as L

    class EpochReport(L.Callback):
        def __init__(self) -> None:
            self.started: float | None = None

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            now = time.perf_counter()
            if self.started is None:
                self.started = now
            done = trainer.current_epoch
            per_epoch = (now - self.started) / done if done else None
            on_epoch(done + 1, int(trainer.max_epochs or done + 1), per_epoch)

    return EpochReport()
