"""The ``mrisynth`` command line: one subcommand per task, each a thin call into the library."""

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import data, evaluation, synthesis, training


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``run``, the function that carries it out."""
    parser = argparse.ArgumentParser(prog="mrisynth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (data, training, synthesis, evaluation):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mrisynth`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:
        parser.exit(2, f"mrisynth {args.command}: error: {error}\n")
