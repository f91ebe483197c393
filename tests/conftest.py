"""Shared fixtures: a private MLflow store and model folder per test session, no network."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


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
