"""What several `zoo` commands share: the subcommand with its help and examples, and the
arguments they have in common."""

from __future__ import annotations

import argparse
import textwrap

HELP_WIDTH = 78  # columns of a command's description in --help


def command(commands, name: str, *, summary: str, description: str,
             examples: list[str]) -> argparse.ArgumentParser:
    """Add a public subcommand.

    Args:
        commands: the subparsers action of the `zoo` parser.
        name: the subcommand.
        summary: its line in `zoo --help`.
        description: what it does, shown first by `zoo NAME --help`.
        examples: command lines, shown one a line under "examples:" by `zoo NAME --help`.

    Returns:
        The subcommand's parser, for its arguments.
    """
    return commands.add_parser(
        name, help=summary, description=textwrap.fill(description, HELP_WIDTH),
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
        # The raw formatter keeps every example on a line of its own (and so does not wrap the
        # description, which is filled above).
        formatter_class=argparse.RawDescriptionHelpFormatter)


def recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """RECIPE and its `key=value` overrides."""
    parser.add_argument("recipe", help="short name (mnist1d/cnn_paper; zoo list recipes) or "
                        "path to a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, values parsed as YAML (model.dropout=0.3); "
                        "every key: zoo list keys")


def workers_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    """`--workers N`; `unit` is what one worker trains at a time (run, trial, entry)."""
    parser.add_argument("--workers", type=int, default=None,
                        help="training processes at once, through Keras Tuner's chief and "
                        f"workers (default: one per core, at most one per {unit}); 1 trains "
                        "in this process")


def no_track_argument(parser: argparse.ArgumentParser) -> None:
    """`--no-track`: no MLflow run."""
    parser.add_argument("--no-track", action="store_true", help="do not record an MLflow run")


def host_and_port_arguments(parser: argparse.ArgumentParser) -> None:
    """`--host` (127.0.0.1 unless told otherwise) and `--port` of a server."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
