"""`zoo ui`: the MLflow UI over the zoo's store."""

from __future__ import annotations

import os
import sys

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    ui = arguments.command(
        commands, "ui", summary="serve the MLflow UI over the zoo's store",
        description="Serve the MLflow UI over the zoo's store (or MLFLOW_TRACKING_URI) and "
        "print a link to each experiment's runs.",
        examples=["zoo ui", "zoo ui --port 5001"])
    arguments.host_and_port_arguments(ui)
    ui.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import server, tracking

    uri = tracking.tracking_uri()
    links = _runs_view_links(f"http://{args.host}:{args.port}")
    print(f"zoo: MLflow UI over {uri}")
    for line in links or ["no runs yet: train one with `make train`"]:
        print(f"  {line}")
    sys.stdout.flush()
    # One person browsing: MLflow's own number of web workers will do.
    command = server.server_command(uri, args.host, args.port, workers=None)
    os.execv(command[0], command)
    return 0


def _runs_view_links(base: str) -> list[str]:
    """Each experiment's name and the link to its runs: MLflow 3's UI otherwise opens on its
    GenAI view."""
    from zoo import tracking

    experiments = [e for e in tracking.client().search_experiments() if e.name != "Default"]
    return [f"{e.name:<16} {base}/#/experiments/{e.experiment_id}"
            "/runs?workflowType=machine_learning" for e in experiments]
