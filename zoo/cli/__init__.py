"""The `zoo` command: a thin layer over the package's functions, one module per command.

User errors (bad recipe, missing data, NaN loss) print one line `zoo: error: ...` and exit 2;
Ctrl-C and SIGTERM exit 130 after the MLflow run is marked KILLED.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import os
import sys

from zoo.cli import (
    ablate,
    augment_preview,
    bench,
    build_zoo,
    compare,
    data,
    gradcheck,
    join,
    listing,
    lr_find,
    postgres,
    predict,
    register,
    reproduce,
    roles,
    sanity,
    server,
    train,
    tune,
    ui,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

INTERNAL_COMMANDS = roles.NAMES

# In the order `zoo --help` lists them.
PUBLIC_COMMANDS = (train, tune, ablate, compare, gradcheck, sanity, lr_find, server, postgres,
                   augment_preview, listing, predict, build_zoo, join, register, reproduce, ui,
                   bench, data)


def main(argv: list[str] | None = None) -> int:
    """Run one `zoo` command (`argv` without the program name; `sys.argv[1:]` when None).

    Returns:
        The exit status: 0, `EXIT_USER_ERROR` after a one-line error for bad input, or
        `EXIT_INTERRUPTED` after Ctrl-C or SIGTERM.
    """
    args = parse_args(argv)  # (zoo/__init__ has already quietened TensorFlow's C++ start-up logs)

    from zoo import interrupt
    from zoo.errors import ZooError

    interrupt.install()
    # A crash in native code (TensorFlow, a database driver) prints every thread's Python stack
    # on stderr before the process dies, so a rare one can be told apart and reported.
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no file behind stderr
        faulthandler.enable()
    _print_deprecations_on_one_line()
    try:
        return args.handler(args) or 0
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("zoo: interrupted; any MLflow run was marked KILLED and no model file was "
              "written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _print_deprecations_on_one_line() -> None:
    """The zoo's own deprecation warnings read like its errors, `zoo: warning: ...`, without
    the file, line and source that Python's format adds for a programmer; other warnings keep
    that format."""
    import warnings

    from zoo.errors import ZooDeprecation

    python_format = warnings.formatwarning
    if getattr(python_format, "zoo_one_line", False):  # installed by an earlier `main`
        return

    def formatted(message, category, filename, lineno, line=None):
        if issubclass(category, ZooDeprecation):
            return f"zoo: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    formatted.zoo_one_line = True

    warnings.formatwarning = formatted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line (`sys.argv[1:]` when `argv` is None).

    Exits with status 2 and argparse's usage message when the command line does not parse.
    """
    parser = _parser()
    # Overrides may follow options too (`zoo ablate R --axis a=1,2 training.epochs=3`), which
    # argparse's positional handling alone would refuse.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _parser() -> argparse.ArgumentParser:
    from zoo import __version__

    parser = argparse.ArgumentParser(
        prog="zoo", description="Train, compare and load small Keras models from YAML recipes.",
        epilog="`zoo COMMAND --help` explains a command and its options, with examples.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    # `zoo --help` lists the commands that have a `help`; the internal roles have none.
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in PUBLIC_COMMANDS:
        command.add(commands)
    roles.add(commands)
    return parser


def run() -> None:
    """The `zoo` command: `main`, then exit with its status."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of the output went away (`zoo list keys | head`): as any Unix tool, stop
        # without a traceback; what is still buffered goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it
    # A process that imported TensorFlow spends most of a second at exit in the collector's
    # passes over its millions of objects; frozen, they are skipped. At-exit handlers still run
    # (before the interpreter's own collection), and Python never promised to finalize the
    # objects still alive at exit.
    gc.freeze()
    sys.exit(status)
