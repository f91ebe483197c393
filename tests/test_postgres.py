"""A real PostgreSQL server (Debian's package), the MLflow tracking server on it, a training run
through it: the team setup of `make postgres` and `make server BACKEND=...`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import requires_postgres
from zoo import postgres
from zoo.server import free_port, server_command, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]

pytestmark = [requires_postgres, pytest.mark.processes]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cluster():
    # Not under pytest's tmp_path, which other users cannot enter: as root, PostgreSQL runs as
    # the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="zoo-test-postgres-"))
    folder.chmod(0o755)
    cluster = postgres.Cluster(folder / "postgres", port=free_port())
    try:
        yield cluster
    finally:
        postgres.stop(cluster)
        shutil.rmtree(folder, ignore_errors=True)
    assert not _listening(cluster.port), "PostgreSQL still listens after stop"


def test_a_folder_the_postgres_user_cannot_reach_is_named(tmp_path):
    if os.geteuid() != 0:  # a user's own cluster runs as that user, who can reach the folder
        pytest.skip("only root hands the cluster to the postgres user")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(postgres.PostgresError, match=f"{closed}.*chmod o\\+x"):
        postgres.start(postgres.Cluster(closed / "postgres", port=free_port()))


def test_the_local_cluster_starts_once_and_stops(cluster):
    uri = postgres.start(cluster)
    assert uri.startswith("postgresql://mlflow:")
    assert uri.endswith(f"@127.0.0.1:{cluster.port}/mlflow")
    assert cluster.running() and _listening(cluster.port)
    assert oct(cluster.password_file.stat().st_mode & 0o777) == "0o600"
    assert postgres.start(cluster) == uri  # started again: the same cluster, role and password
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select current_user")).scalar() == "mlflow"
    engine.dispose()
    wrong = uri.replace(uri.split(":")[2].split("@")[0], "not-the-password")
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
        sqlalchemy.create_engine(wrong).connect()
    assert postgres.stop(cluster) and not cluster.running()
    assert not postgres.stop(cluster)


def test_a_run_through_the_tracking_server_on_postgresql(cluster, tmp_path, monkeypatch,
                                                          mlflow_store):
    from mlflow import MlflowClient

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))  # the server's artifacts go under build/
    uri = postgres.start(cluster)
    port = free_port()
    server = subprocess.Popen(server_command(uri, "127.0.0.1", port, workers=1),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server)
        done = subprocess.run(
            [sys.executable, "-m", "zoo.cli", "train", "digits/mlp", "model.widths=[16]",
             "training.epochs=3", "--json"], capture_output=True, text=True, timeout=300,
            env={**os.environ, "MLFLOW_TRACKING_URI": url, "ZOO_HOME": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.splitlines()[-1])
        client = MlflowClient(url)
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(result["run_id"], "loss")] == [1, 2, 3]
        assert run.data.metrics["test_accuracy"] == pytest.approx(result["test_accuracy"])
        assert {d.dataset.name for d in run.inputs.dataset_inputs} == {
            "digits-train", "digits-validation", "digits-test"}
        # The model's files went to the server, which serves them back.
        import mlflow
        import mlflow.pyfunc

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(url)  # what runs:/ URIs resolve against (it wins over the env)
        try:
            model = mlflow.pyfunc.load_model(f"runs:/{result['run_id']}/model")
        finally:
            mlflow.set_tracking_uri(previous)
        probabilities = np.asarray(model.predict(np.zeros((2, 8, 8, 1), np.float32)))
        assert probabilities.shape == (2, 10)
        assert list((tmp_path / "build" / "mlflow-artifacts").rglob("MLmodel"))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert not _listening(port)


@pytest.mark.parametrize("through_server", [True, False])
def test_runs_starting_together_log_the_same_new_splits(cluster, tmp_path, monkeypatch,
                                                        through_server):
    """The workers of a grid start their first runs together: each logs the splits, which the
    experiment does not have yet, and none may fail on the data sets' unique key."""
    import threading
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from zoo.data import load_dataset
    from zoo.logged_models import log_splits

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    uri = postgres.start(cluster)
    server = None
    if through_server:
        port = free_port()
        server = subprocess.Popen(server_command(uri, "127.0.0.1", port, workers=2),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        wait_until_healthy(uri, server)
    try:
        splits = load_dataset("digits", 0.1)
        experiment = MlflowClient(uri).create_experiment("together")
        runs = 8
        barrier, errors, clients = threading.Barrier(runs), [], [MlflowClient(uri)
                                                                  for _ in range(runs)]
        ids = [client.create_run(experiment).info.run_id for client in clients]

        def log(index: int) -> None:
            barrier.wait()
            try:
                log_splits(SimpleNamespace(client=clients[index], run_id=ids[index]), splits,
                           "zoo.data:digits")
            except Exception as err:  # the failure this test is about, reported below
                errors.append(err)

        threads = [threading.Thread(target=log, args=(i,)) for i in range(runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        for run_id in ids:
            inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
            assert sorted(d.dataset.name for d in inputs) == [
                "digits-test", "digits-train", "digits-validation"]
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
