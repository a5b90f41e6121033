"""Peak memory while a block of code runs: what a method costs besides its time.

No library here reports a process's peak resident memory over an interval (``resource``'s ``ru_maxrss`` is
the peak over the whole process, so in a study running many runs it only ever grows; psutil is not a
dependency), so a daemon thread samples the resident set from ``/proc/self/statm`` every ``interval``
seconds. On a GPU the CUDA allocator's own peak is read as well. Where ``/proc`` is missing (macOS,
Windows) the process-wide ``ru_maxrss`` is reported instead and labelled as such.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType


def resident_mb() -> float | None:
    """This process's resident set size now, in MiB (None where ``/proc/self/statm`` is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.record()``: peak resident MiB, and CUDA MiB on a GPU."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self.how = "sampled /proc/self/statm"
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            now = resident_mb()
            if now is not None:
                self.peak_mb = now if self.peak_mb is None else max(self.peak_mb, now)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if resident_mb() is not None:
            self._thread = threading.Thread(target=self._sample, name="emfm-peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import torch

        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            import resource
            import sys

            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
            self.peak_mb = kib / 2**20 if sys.platform == "darwin" else kib / 2**10
            self.how = "process-wide ru_maxrss (no /proc here)"
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def record(self) -> dict[str, float | str | None]:
        """The figures for ``metrics.json``."""
        rss = None if self.peak_mb is None else round(self.peak_mb, 1)
        cuda = None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1)
        return {"peak_resident_mb": rss, "peak_cuda_mb": cuda, "how": self.how}
