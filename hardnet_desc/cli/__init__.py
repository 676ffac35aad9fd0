"""The ``hardnet-desc`` command line. Each subcommand is a thin wrapper over the library.

One module per command family, each command's parser (``add_*``) beside its handler (``run*``):
``train`` (make-dataset, train), ``match``, ``extract``, ``export`` (export-onnx), ``evaluate``
(eval-sequences, eval-fpr95, eval-pairs, make-sequences) and ``sfm``; the options several commands
share are declared once in ``options``. Handlers import the heavy modules themselves, so
``hardnet-desc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import evaluate, export, extract, match, sfm, train

#: Each command's parser, in the order ``hardnet-desc --help`` lists them.
SUBCOMMANDS = (train.add_make_dataset, train.add_train, match.add_parser, extract.add_parser, export.add_parser,
               evaluate.add_eval_sequences, evaluate.add_eval_fpr95, evaluate.add_eval_pairs,
               evaluate.add_make_sequences, sfm.add_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardnet-desc", description="HardNet local descriptors: a drop-in for SIFT descriptors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (the package itself sits above the CLI's layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hardnet-desc")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Every error ends in one ``hardnet-desc COMMAND: error: ...`` line on stderr
    and exit code 2 (bad input: ValueError, TypeError, OSError and their kin, or a missing optional extra) or 1 (anything else);
    ``HARDNET_DESC_DEBUG=1`` shows the traceback instead."""
    try:
        args = build_parser().parse_args(argv)  # the parsers' defaults import torch: over a second
    except KeyboardInterrupt:
        print("hardnet-desc: interrupted", file=sys.stderr)
        return 130
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"hardnet-desc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the command line's last line of defence)
        if os.environ.get("HARDNET_DESC_DEBUG"):
            raise
        print(f"hardnet-desc {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, _INPUT_ERRORS) else 1


#: Errors that mean bad input (exit code 2); ImportError: a missing optional extra such as pycolmap.
_INPUT_ERRORS = (ValueError, TypeError, OSError, ImportError)


def _one_line(err: BaseException) -> str:
    """``err``'s message on one line; other than for the usual input errors, led by its type."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if isinstance(err, _INPUT_ERRORS) else f"{type(err).__name__}: {text}"
