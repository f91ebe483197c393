"""The internal commands `tune-role` and `jobs-role`: a Keras Tuner chief or worker process
that `zoo tune --workers`, `zoo ablate` and `zoo build-zoo` start; not for users."""

from __future__ import annotations

TUNE_ROLE, JOBS_ROLE = "tune-role", "jobs-role"
NAMES = (TUNE_ROLE, JOBS_ROLE)


def add(commands) -> None:
    """The processes the zoo starts itself; without a `help`, `zoo --help` leaves them out."""
    tune_role = commands.add_parser(TUNE_ROLE)  # a chief or worker of a distributed search
    tune_role.add_argument("recipe")
    tune_role.add_argument("--directory", required=True)
    tune_role.add_argument("--parent-run", required=True)
    tune_role.set_defaults(handler=_tune_role)

    jobs_role = commands.add_parser(JOBS_ROLE)  # a chief or worker of a job list
    jobs_role.add_argument("jobs")
    jobs_role.set_defaults(handler=_jobs_role)


def _tune_role(args) -> int:
    from pathlib import Path

    from zoo.recipe import load_recipe
    from zoo.workflows.tune import run_role

    return run_role(load_recipe(args.recipe), Path(args.directory), args.parent_run)


def _jobs_role(args) -> int:
    from pathlib import Path

    from zoo.workflows.workers import run_job_role

    return run_job_role(Path(args.jobs))
