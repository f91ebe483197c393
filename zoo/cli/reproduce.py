"""`zoo reproduce`: retrain a pretrained model and compare it with its manifest."""

from __future__ import annotations

import sys

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    reproduce = arguments.command(
        commands, "reproduce", summary="retrain a pretrained model, compare with its manifest",
        description="Retrain a pretrained model from the recipe and seed in its manifest and "
        "compare it with the shipped one: it reproduces with identical weights or a test "
        "accuracy within half a percentage point (on another CPU model than the one it was "
        "built on: within the test accuracies of the seeds it was built from). Exits 1 if it "
        "does not (make reproduce MODEL=).",
        examples=["zoo reproduce mnist1d/cnn_paper", "zoo reproduce digits/mlp --no-track"])
    reproduce.add_argument("name", help="a pretrained model (zoo list pretrained)")
    arguments.no_track_argument(reproduce)
    reproduce.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.workflows.reproduce import reproduce

    print(f"zoo: retraining {args.name} from its manifest recipe ...", flush=True)
    result = reproduce(args.name, track=not args.no_track,
                       verbose=1 if sys.stdout.isatty() else 2)
    print(result.report())
    return 0 if result.verdict.startswith("reproduced") else 1
