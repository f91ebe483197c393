"""zoo.tracking.TrackedRun: per-epoch metrics sent in the background, nothing lost or hidden."""

from __future__ import annotations

import threading

import pytest

from zoo import tracking


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
