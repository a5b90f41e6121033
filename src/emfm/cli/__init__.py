"""The ``emfm`` command: parse, resolve, call the library. Nothing imports this package.

Each sub-command lives in its own module here with an ``add_parser(subparsers)`` function that
registers its arguments and sets ``func``. Only argparse is imported at start-up, so ``emfm --help``
does not import torch. Any :class:`~emfm.errors.EmfmError` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from emfm import __version__
from emfm.errors import EmfmError

_COMMANDS = ("data", "backbones", "train", "analyze", "study", "predict")


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
    except EmfmError as exc:
        print(f"emfm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emfm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `emfm ... | head` closed the pipe: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
