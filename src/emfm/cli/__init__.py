"""The ``emfm`` command: parse, resolve, call the library. Nothing imports this package.

Each sub-command lives in its own module here with an ``add_parser(subparsers)`` function that
registers its arguments and sets ``func``. Only argparse is imported at start-up, so ``emfm --help``
does not import torch. Every failure is one line on stderr: an :class:`~emfm.errors.EmfmError` or an OS
error exits 2, Ctrl-C 130, an internal error 1 (its traceback with ``-v`` or ``EMFM_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from emfm import __version__
from emfm.errors import EmfmError, Interrupted

_COMMANDS = ("data", "backbones", "train", "adapt", "analyze", "study", "predict", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emfm",
        description="Measure and use vision foundation models for electron-microscopy segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"emfm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"emfm.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"emfm.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.verbose) or os.environ.get("EMFM_DEBUG", "").strip() not in ("", "0")
    _tolerant_streams()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Lightning prints through its own handler; stop its records reaching ours a second time.
    logging.getLogger("lightning.pytorch").propagate = False
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 (the last resort: every failure is one line, never a traceback)
        return _report_failure(exc, debug)


def _report_failure(exc: BaseException, debug: bool) -> int:
    """One line on stderr and the exit status for ``exc``: 2 for what the user can fix (an emfm error, an
    OS error such as a path under a regular file), 130 for Ctrl-C, 1 for an internal error, whose traceback
    ``-v`` or ``EMFM_DEBUG=1`` prints."""
    if isinstance(exc, SystemExit):  # sys.exit() deep down, e.g. by a library: keep its status
        raise exc
    if isinstance(exc, BrokenPipeError):  # `emfm ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if debug and not isinstance(exc, (EmfmError, KeyboardInterrupt)):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        detail = str(exc) if isinstance(exc, Interrupted) else ""
        _say(f"emfm: interrupted{': ' + detail if detail else ''}")
        return 130
    if isinstance(exc, EmfmError):
        _say(f"emfm: error: {exc}")
        return 2
    if isinstance(exc, OSError):
        _say(f"emfm: error: {os_error_message(exc)}")
        return 2
    if not isinstance(exc, Exception):  # GeneratorExit and the like: not ours to turn into a line
        raise exc
    hint = "" if debug else "; rerun with -v (or EMFM_DEBUG=1) for the traceback"
    _say(f"emfm: internal error: {type(exc).__name__}: {exc}{hint}, and please report it")
    return 1


#: errno -> what usually causes it, for the one-line message of an OS error.
_OS_HINTS = {
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way of a folder, or the reverse",
    errno.EISDIR: "it is a folder, where a file is wanted",
    errno.EACCES: "no permission: choose a place you may write to",
    errno.EPERM: "not permitted: choose a place you may write to",
    errno.ENOSPC: "the disk is full: free space or choose another place",
    errno.EROFS: "the file system is read-only: choose another place",
    errno.ENOENT: "no such file or folder",
}


def os_error_message(exc: OSError) -> str:
    """``runs/x: Not a directory (a part of the path is a file, not a folder)`` for an OSError."""
    what = exc.strerror or str(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    hint = _OS_HINTS.get(exc.errno or -1, "")
    text = f"{where}: {what}" if where else what
    return f"{text} ({hint})" if hint and hint.lower() != what.lower() else text


def _say(line: str) -> None:
    """Print ``line`` as one line on stderr, whatever newlines a message carries."""
    print(" ".join(part.strip() for part in line.splitlines() if part.strip()), file=sys.stderr)


def _tolerant_streams() -> None:
    """Never fail on printing: a file name that is not valid in the terminal's encoding (bytes that are
    not UTF-8, or any non-ASCII under ``LANG=C``) is printed with backslash escapes, not a crash."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # detached or closed: nothing to reconfigure
                stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
