"""`zoo register`: the shipped pretrained models in the MLflow Model Registry."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    register = arguments.command(
        commands, "register", summary="put the shipped models in the MLflow Model Registry",
        description="Register the shipped pretrained models (or the NAMEs given) in the current "
        "MLflow store (MLFLOW_TRACKING_URI, default the local one): one registered model per "
        "entry, named zoo-<data set>-<name>, with its model card as description; the shipped "
        "file, checked against its sha256, as a version with the manifest's figures as tags; "
        "the alias 'shipped' on it. Registering the same file again reuses its version "
        "(make register).",
        examples=["zoo register", "zoo register mnist1d/cnn_paper digits/cnn",
                  "zoo register digits/mlp  # into MLFLOW_TRACKING_URI, e.g. a team server"])
    register.add_argument("names", nargs="*", metavar="NAME",
                          help="entries to register (default: all; zoo list pretrained)")
    register.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.workflows.register import register_pretrained

    for registered in register_pretrained(args.names):
        print(registered.line(), flush=True)
    return 0
