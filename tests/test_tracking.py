"""zoo.tracking.TrackedRun: per-epoch metrics sent in the background, nothing lost or hidden."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from zoo import tracking

REPO = Path(__file__).resolve().parents[1]


def test_every_epoch_arrives_in_order_and_the_run_closes_finished(mlflow_client, monkeypatch):
    monkeypatch.setattr(tracking.TrackedRun, "FLUSH_SECONDS", 0.0)  # a batch every epoch
    with tracking.start_run("tracking-test", "epochs") as run:
        for step in range(1, 51):
            run.log_epoch({"loss": 1.0 / step, "accuracy": step / 50}, step=step)
        run_id = run.run_id
    history = mlflow_client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 51))
    assert {m.step: m.value for m in history}[7] == pytest.approx(1 / 7)
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"


def test_batches_are_sent_off_the_training_thread(mlflow_client, monkeypatch):
    senders = []
    send = type(mlflow_client).log_batch

    def recording(self, run_id, *args, **kwargs):
        if kwargs.get("metrics"):
            senders.append(threading.current_thread())
        return send(self, run_id, *args, **kwargs)

    monkeypatch.setattr(type(mlflow_client), "log_batch", recording)
    monkeypatch.setattr(tracking.TrackedRun, "FLUSH_SECONDS", 0.0)
    with tracking.start_run("tracking-test", "threads") as run:
        run.log_epoch({"loss": 0.5}, step=1)
        run.log_epoch({"loss": 0.4}, step=2)
    assert senders and threading.main_thread() not in senders


def test_a_failed_batch_is_raised_and_the_run_still_ends(mlflow_client, monkeypatch):
    send = type(mlflow_client).log_batch

    def failing(self, run_id, *args, **kwargs):
        if kwargs.get("metrics"):
            raise ConnectionError("tracking server went away")
        return send(self, run_id, *args, **kwargs)

    monkeypatch.setattr(type(mlflow_client), "log_batch", failing)
    with pytest.raises(ConnectionError, match="went away"):
        with tracking.start_run("tracking-test", "failing") as run:
            run.log_epoch({"loss": 0.5}, step=1)
            run_id = run.run_id
    assert mlflow_client.get_run(run_id).info.status != "RUNNING"


class _Pending:
    """Files still being made, as `zoo.plots.FiguresAside` offers them."""

    def __init__(self, paths, error=None):
        self.paths, self.error = paths, error
        self.waited = self.closed = False

    def wait(self):
        self.waited = True
        if self.error:
            raise self.error
        return self.paths

    def close(self):
        self.closed = True


def test_files_made_later_are_uploaded_as_the_run_ends(mlflow_client, tmp_path):
    figure = tmp_path / "curves.png"
    figure.write_bytes(b"png")
    pending = _Pending([figure])
    with tracking.start_run("tracking-test", "later") as run:
        run.log_artifacts_later(pending, "monitor")
        assert not pending.waited
    assert pending.waited and pending.closed
    assert [a.path for a in mlflow_client.list_artifacts(run.run_id, "monitor")] == [
        "monitor/curves.png"]


def test_a_stopped_run_does_not_wait_and_a_failed_one_keeps_its_own_error(mlflow_client,
                                                                          tmp_path):
    stopped = _Pending([])
    with pytest.raises(KeyboardInterrupt):
        with tracking.start_run("tracking-test", "stopped") as run:
            run.log_artifacts_later(stopped)
            raise KeyboardInterrupt
    assert not stopped.waited and stopped.closed
    assert mlflow_client.get_run(run.run_id).info.status == "KILLED"

    broken = _Pending([], error=RuntimeError("figure failed"))
    with pytest.raises(ValueError, match="the run's own error"):
        with tracking.start_run("tracking-test", "failed") as run:
            run.log_artifacts_later(broken)
            raise ValueError("the run's own error")
    assert broken.waited and broken.closed
    assert mlflow_client.get_run(run.run_id).info.status == "FAILED"

    with pytest.raises(RuntimeError, match="figure failed"):
        with tracking.start_run("tracking-test", "finished") as run:
            run.log_artifacts_later(_Pending([], error=RuntimeError("figure failed")))
    assert mlflow_client.get_run(run.run_id).info.status == "FINISHED"


_LOGGING_PROCESS = """
import sys
from zoo import tracking
with tracking.start_run("concurrency", sys.argv[1]) as run:
    for step in range(1, 31):
        run.log_epoch({"loss": 1.0 / step}, step=step)
"""


@pytest.mark.processes
def test_processes_that_open_a_new_store_at_once_all_finish(tmp_path):
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    processes = [subprocess.Popen([sys.executable, "-c", _LOGGING_PROCESS, f"p{i}"], env=env,
                                  stderr=subprocess.PIPE, text=True) for i in range(5)]
    failures = [p.stderr.read()[-1500:] for p in processes if p.wait(timeout=300) != 0]
    assert not failures, failures[0]
    store = tracking.client_for(uri)
    runs = store.search_runs([store.get_experiment_by_name("concurrency").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"p{i}" for i in range(5)]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = store.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, 31))


_DOOMED_PROCESS = """
import time
from zoo import tracking
with tracking.start_run("orphans", "doomed") as run:
    print(run.run_id, flush=True)
    time.sleep(120)
"""


def test_a_run_left_running_by_a_killed_process_is_marked_killed_next_time(mlflow_client):
    import signal
    import subprocess
    import sys

    from zoo import mlflow_layout as layout

    child = subprocess.Popen([sys.executable, "-c", _DOOMED_PROCESS], stdout=subprocess.PIPE,
                             text=True, env=os.environ)
    try:
        run_id = child.stdout.readline().strip()
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
        assert tracking.end_orphaned_runs(mlflow_client, experiment_id) == []  # still alive
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert mlflow_client.get_run(run_id).info.status == "RUNNING"
    # Another host's run, and a run whose pid now belongs to another process (this one).
    other_host = mlflow_client.create_run(experiment_id, tags={
        layout.HOST: "elsewhere", layout.PROCESS: "1:1"}).info.run_id
    reused = mlflow_client.create_run(experiment_id, tags={
        layout.HOST: socket.gethostname(), layout.PROCESS: f"{os.getpid()}:1"}).info.run_id
    with tracking.start_run("orphans", "next"):
        pass
    doomed = mlflow_client.get_run(run_id)
    assert doomed.info.status == "KILLED"
    assert doomed.data.tags[layout.ENDED_BY] == (
        f"process {child.pid} on {socket.gethostname()} ended without closing the run")
    assert mlflow_client.get_run(reused).info.status == "KILLED"
    assert mlflow_client.get_run(other_host).info.status == "RUNNING"


@pytest.mark.processes
def test_eight_processes_on_a_new_store_all_finish_with_every_metric(tmp_path):
    """The first use of a store, by several processes at once (two terminals, a grid's
    workers): creating its schema is serialized, and every run and metric arrives."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", "digits/mlp", "model.widths=[8]",
         "training.epochs=3", f"seed={seed}", "--json"],
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "ZOO_HOME": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(8)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == [1, 2, 3], (run.info.run_id, key)
        assert {"test_accuracy", "test_loss"} <= set(run.data.metrics)
