"""`zoo server`: an MLflow tracking server for concurrent writers."""

from __future__ import annotations

import os
import sys

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    server = arguments.command(
        commands, "server", summary="MLflow tracking server for concurrent writers",
        description="Run an MLflow tracking server that many processes or machines can log to "
        "at once, over the zoo's SQLite store or a database such as PostgreSQL. Point the zoo "
        "at it with MLFLOW_TRACKING_URI.",
        examples=["zoo server",
                  "zoo server --backend postgresql://zoo@db.example.org/zoo --port 5001",
                  "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 zoo train mnist1d/cnn_paper"])
    server.add_argument("--backend", default=None,
                        help="backend store URI (default: the zoo's SQLite store; e.g. "
                        "postgresql://user:password@host/db)")
    arguments.host_and_port_arguments(server)
    server.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import server, tracking

    backend = args.backend or tracking.tracking_uri()
    print(f"zoo: MLflow tracking server over {backend} on http://{args.host}:{args.port}; "
          f"point workers at it with MLFLOW_TRACKING_URI=http://{args.host}:{args.port}")
    sys.stdout.flush()
    command = server.server_command(backend, args.host, args.port, workers=4)
    os.execv(command[0], command)
    return 0
