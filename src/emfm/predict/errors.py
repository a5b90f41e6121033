"""The two problems ``emfm predict`` meets that the package-wide error types do not name.

Both subclass :class:`~emfm.errors.EmfmError` (so the CLI prints them as one line) and a built-in
(so callers catching ``FileExistsError`` or ``OSError`` keep working).
"""

from __future__ import annotations

from emfm.errors import EmfmError


class OutputExistsError(EmfmError, FileExistsError):
    """The output path holds something that is not a resumable prediction of this same job."""


class DiskSpaceError(EmfmError, OSError):
    """The output's file system has less free space than the output may need."""
