"""Shared fixtures: a private MLflow store and model folder per test session, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Debian's PostgreSQL server is part of these machines' image (and `.ci/run` installs it where it
# is missing); elsewhere the tests that need it say why they did not run.
requires_postgres = pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"),
    reason="PostgreSQL is not installed (Debian: apt-get install postgresql)")

# Fashion-MNIST's IDX files from Debian's dataset-fashion-mnist (`make data`; `.ci/run`
# installs it); elsewhere the tests that read them say why they did not run.
requires_fashion_mnist = pytest.mark.skipif(
    not all(Path("/usr/share/datasets/fashion-mnist", f"{split}-{kind}-idx{dims}-ubyte.gz")
            .is_file() for split in ("train", "t10k")
            for kind, dims in (("images", 3), ("labels", 1))),
    reason="Fashion-MNIST is not installed (make data, or apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """A SQLite MLflow store in a temporary folder, used by every tracking test of the session
    (creating the schema costs seconds, so it is done once)."""
    folder = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def mlflow_client(mlflow_store):
    from zoo import tracking

    return tracking.client()


@pytest.fixture
def model_dir(tmp_path):
    return tmp_path / "models"


def run_count(mlflow_client) -> int:
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return 0
    return len(mlflow_client.search_runs(experiments, max_results=10_000))


def start_zoo(argv: list[str], home) -> subprocess.Popen:
    """`python -m zoo.cli <argv>` as a real process with its own project folder, silent."""
    return subprocess.Popen([sys.executable, "-m", "zoo.cli", *argv],
                            env={**os.environ, "ZOO_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_child_runs(mlflow_client, parent_name: str, status: str, count: int,
                        seconds: float, experiment: str = "digits"):
    """Poll the store until the run named `parent_name` has `count` child runs of `status`.

    Returns:
        (the parent's run id or None, its child runs of that status), as last seen.
    """
    from zoo.tracking import child_runs

    deadline, parent_id, found = time.monotonic() + seconds, None, []
    while time.monotonic() < deadline and len(found) < count:
        time.sleep(0.5)
        known = mlflow_client.get_experiment_by_name(experiment)
        parents = mlflow_client.search_runs(
            [known.experiment_id], filter_string=f"attributes.run_name = '{parent_name}'"
        ) if known else []
        if parents:
            parent_id = parents[0].info.run_id
            found = [r for r in child_runs(mlflow_client, parent_id) if r.info.status == status]
    return parent_id, found
