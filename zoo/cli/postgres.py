"""`zoo postgres`: a local PostgreSQL server for a team's MLflow tracking server."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    postgres = arguments.command(
        commands, "postgres", summary="a local PostgreSQL for the MLflow tracking server",
        description="Start (creating it the first time), stop or show the project's local "
        "PostgreSQL server: data under build/postgres/, listening on 127.0.0.1 only, with a "
        "database and a role named mlflow. 'start' prints the database's URI for "
        "make server BACKEND=... (make postgres, make postgres-stop).",
        examples=["zoo postgres start", "zoo postgres status --port 5433",
                  "zoo postgres stop"])
    postgres.add_argument("action", choices=("start", "stop", "status"),
                          help="start it (and print its URI), stop it, or say whether it runs")
    postgres.add_argument("--port", type=int, default=None,
                          help="TCP port on 127.0.0.1 (default: 5433)")
    postgres.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import postgres

    cluster = postgres.default_cluster(args.port)
    if args.action == "start":
        uri = postgres.start(cluster)
        print(f"zoo: PostgreSQL on 127.0.0.1:{cluster.port}, data in {cluster.data}")
        print(f"zoo: run the tracking server on it with: make server BACKEND='{uri}'")
        print(uri)
    elif args.action == "stop":
        stopped = postgres.stop(cluster)
        print("zoo: PostgreSQL stopped" if stopped else "zoo: PostgreSQL was not running")
    else:
        running = cluster.running()
        print(f"zoo: PostgreSQL {'runs' if running else 'does not run'} "
              f"(data in {cluster.data}, port {cluster.port})")
        return 0 if running else 1
    return 0
