"""The small set of exceptions emfm raises for problems a user can fix.

Each subclasses a built-in as well, so callers that catch ``KeyError`` or ``ValueError`` keep working,
and the CLI can turn any :class:`EmfmError` into one line and a non-zero exit without a traceback.
Messages say what was given, what was expected, and how to fix it.
"""

from __future__ import annotations


class EmfmError(Exception):
    """Base class of every error that the user can act on."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownNameError(EmfmError, KeyError):
    """A registry lookup failed (dataset, backbone, head...)."""


class DataError(EmfmError, ValueError):
    """Input data is missing, corrupt, unpaired or otherwise unusable."""


class DownloadError(EmfmError, OSError):
    """A download failed, was truncated, or did not match its checksum."""


class WeightsNotFoundError(EmfmError, FileNotFoundError):
    """Backbone weights are neither local nor in the hub cache (and we are offline)."""


class GatedWeightsError(WeightsNotFoundError):
    """Weights are gated (e.g. DINOv3) and access has not been granted or the file is missing."""


class CheckpointFormatError(EmfmError, ValueError):
    """A checkpoint's keys or shapes fit no known family."""


class ConfigError(EmfmError, ValueError):
    """A configuration value or combination is invalid."""


class RunDirError(EmfmError, FileExistsError):
    """A run directory is missing what is needed, or holds a different run."""


class CacheError(EmfmError, RuntimeError):
    """The feature cache cannot give what a run needs (e.g. other ranks never wrote their share)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), carrying what the interrupted command kept and how to go on.

    A KeyboardInterrupt still, so code that cleans up on one does so; the CLI prints
    ``emfm: interrupted: <message>`` and exits 130, as a shell expects of a process stopped by SIGINT.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
