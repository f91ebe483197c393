"""`zoo join`: a worker of a grid or a zoo build that a chief on another machine serves."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    join = arguments.command(
        commands, "join", summary="train jobs of a grid or zoo build served elsewhere",
        description="Join the grid (zoo ablate) or zoo build (zoo build-zoo) that a chief "
        "serves at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT: train the jobs it gives out, "
        "each into its MLflow run in MLFLOW_TRACKING_URI (the chief's tracking server), until "
        "none is left. KERASTUNER_TUNER_ID names this worker (worker1, worker2, ...); started "
        "again under the same id after a kill, it resumes the job it held from its backup.",
        examples=["KERASTUNER_TUNER_ID=worker1 zoo join  # with the chief's address exported",
                  "KERASTUNER_TUNER_ID=worker2 zoo join  # a second worker on this machine"])
    join.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    import os

    from zoo.workflows.workers import join

    trained = join()
    print(f"zoo: {os.environ['KERASTUNER_TUNER_ID']}: no job left after {trained} trained "
          "here; the chief collects the results")
    return 0
