"""Backups and resume: a killed run, rerun, ends with the weights of an uninterrupted one, in
the same MLflow run with one value per step; damaged backups are passed over; a NaN run keeps
its backup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.training.backup import BackupStore, Snapshot

REPO = Path(__file__).resolve().parents[1]


class _Model:
    """What `BackupStore.latest` reads of a model: its variables, its optimizer's, weights."""

    def __init__(self, shapes):
        self.variables = [np.zeros(s) for s in shapes]
        self.weights = self.variables
        self.optimizer = type("Optimizer", (), {"variables": []})()


def _snapshot(epoch: int) -> Snapshot:
    return Snapshot(epoch=epoch, values=[np.full((2, 3), float(epoch)), np.arange(4.0)],
                    state={"run_id": "abc", "history": {"loss": [1.0] * epoch}})


def test_the_newest_backup_is_read_back_and_two_are_kept(tmp_path):
    store = BackupStore(tmp_path / "b")
    for epoch in (1, 2, 3):
        store.write(_snapshot(epoch))
    snapshot, notes = store.latest(_Model([(2, 3), (4,)]))
    assert notes == []
    assert snapshot.epoch == 3 and snapshot.state["run_id"] == "abc"
    np.testing.assert_array_equal(snapshot.values[0], np.full((2, 3), 3.0))
    assert sorted(p.name for p in store.folder.iterdir()) == [
        "epoch-000002.json", "epoch-000002.npz", "epoch-000003.json", "epoch-000003.npz"]


def test_a_damaged_newest_backup_falls_back_to_the_one_before(tmp_path):
    store = BackupStore(tmp_path / "b")
    store.write(_snapshot(1))
    store.write(_snapshot(2))
    newest = store.folder / "epoch-000002.npz"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a full disk
    snapshot, notes = store.latest(_Model([(2, 3), (4,)]))
    assert snapshot.epoch == 1
    assert len(notes) == 1 and "epoch-000002.npz is unusable" in notes[0]
    assert "sha256 does not match" in notes[0]


def test_no_usable_backup_means_a_fresh_start(tmp_path):
    store = BackupStore(tmp_path / "b")
    store.write(_snapshot(1))
    (store.folder / "epoch-000001.json").write_text("{not json")
    assert store.latest(_Model([(2, 3), (4,)]))[0] is None
    store.write(_snapshot(2))
    # Another model under the same name: its variables do not fit.
    snapshot, notes = store.latest(_Model([(5,)]))
    assert snapshot is None and any("other variables" in n for n in notes)


def test_data_without_its_checksum_is_ignored(tmp_path):
    store = BackupStore(tmp_path / "b")
    store.write(_snapshot(1))
    (store.folder / "epoch-000001.json").unlink()  # killed between the two writes
    assert not store.exists()


# ------------------------------------------------------------------------------ real processes
RECIPE = "digits/cnn"
# Long enough to be killed in the middle, short enough for the fast suite.
OVERRIDES = ["training.epochs=40", "model.widths=[8, 16]", "model.dense=[16]",
             "model.dropout=0.2", "data.augmentation=[{op: translation, fraction: 0.1}]"]


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(REPO / "recipes", home / "recipes")
    return home


def _train(home: Path, store: str, *extra: str, wait: bool = True):
    process = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", RECIPE, *OVERRIDES, *extra, "--json"],
        env={**os.environ, "ZOO_HOME": str(home), "MLFLOW_TRACKING_URI": store},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out, json.loads(out.splitlines()[-1])


def _backups(home: Path) -> list[Path]:
    return sorted((home / "models").glob("**/*.backup/epoch-*.json"))


def _kill_after_a_backup(process: subprocess.Popen, home: Path, epoch: int = 5) -> int:
    """SIGKILL `process` once it has backed up epoch `epoch` or a later one; returns the epoch
    of the last backup it left."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        backups = _backups(home)
        if backups and json.loads(backups[-1].read_text())["epoch"] >= epoch:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return json.loads(_backups(home)[-1].read_text())["epoch"]


@pytest.mark.processes
def test_a_run_killed_with_sigkill_resumes_into_its_run_with_identical_weights(tmp_path):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = _home(tmp_path)
    _, uninterrupted = _train(_home(tmp_path / "other"), store)

    killed_at = _kill_after_a_backup(_train(home, store, wait=False), home)
    assert 5 <= killed_at < 40

    out, resumed = _train(home, store)
    assert f"resuming after epoch {killed_at} of 40" in out, out
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["epochs"] == 40
    assert _backups(home) == [], "a clean finish removes the backup"

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert {r.info.run_id for r in runs} == {uninterrupted["run_id"], resumed["run_id"]}
    assert all(r.info.status == "FINISHED" for r in runs)
    for key in ("loss", "val_accuracy", "learning_rate"):
        steps = [m.step for m in client.get_metric_history(resumed["run_id"], key)]
        assert sorted(steps) == list(range(1, 41)), key
    test_accuracy = client.get_metric_history(resumed["run_id"], "test_accuracy")
    assert len(test_accuracy) == 1
    assert test_accuracy[0].value == pytest.approx(uninterrupted["test_accuracy"], abs=0)


@pytest.mark.processes
def test_a_second_process_on_the_same_model_is_refused_until_the_first_is_gone(tmp_path):
    from mlflow import MlflowClient

    from zoo.files import exclusive

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = _home(tmp_path)
    longer = "training.epochs=5000"  # still training when the second has started
    first = _train(home, store, longer, wait=False)
    try:
        deadline = time.monotonic() + 120
        while not _backups(home) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None and _backups(home), "the first training ended too soon"
        second = _train(home, store, longer, wait=False)
        out, err = second.communicate(timeout=300)
        assert first.poll() is None, "the first training ended before the second was refused"
        assert second.returncode != 0
        assert f"by another process (pid {first.pid} on " in err, err[-3000:]
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("digits").experiment_id
    assert len(client.search_runs([experiment])) == 1, "the refused process started no run"
    # The lock went with the killed process: the same command would resume now.
    (lock,) = (home / "models").glob("**/.seed*.lock")
    with exclusive(lock, wait=False):
        pass


def test_a_nan_run_fails_and_keeps_its_last_finite_backup(mlflow_client, model_dir,
                                                          monkeypatch):
    import keras

    from zoo.training import backup

    monkeypatch.setattr(backup, "EVERY_SECONDS", 0.0)  # every epoch

    from zoo.errors import TrainingError
    from zoo.recipe import load_recipe
    from zoo.training.backup import backup_folder
    from zoo.training.trainer import train

    class PoisonAtEpoch3(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                kernel = self.model.trainable_weights[0]
                kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))

    recipe = load_recipe(RECIPE, [*OVERRIDES[1:], "training.epochs=8", "seed=7"])
    with pytest.raises(TrainingError, match="loss became nan in epoch 4"):
        train(recipe, verbose=0, model_dir=model_dir, callbacks=[PoisonAtEpoch3()])
    runs = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("digits").experiment_id],
        filter_string=f"tags.`zoo.fingerprint` = '{recipe.fingerprint}' and tags.`zoo.seed` = '7'")
    assert [r.info.status for r in runs] == ["FAILED"]
    from zoo.training.trainer import model_path_for

    store = BackupStore(backup_folder(model_path_for(recipe, model_dir)))
    epochs = sorted(json.loads(p.read_text())["epoch"] for p in store.folder.glob("*.json"))
    assert epochs == [2, 3], "the NaN epoch is not backed up; the two before it are kept"


@pytest.mark.processes
def test_a_killed_grid_resumes_inside_its_interrupted_cell(tmp_path):
    from mlflow import MlflowClient

    from zoo.tracking import child_runs

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = _home(tmp_path)
    command = [sys.executable, "-m", "zoo.cli", "ablate", RECIPE, *OVERRIDES,
               "--axis", "model.dropout=0,0.1", "--seeds", "1", "--workers", "1"]
    env = {**os.environ, "ZOO_HOME": str(home), "MLFLOW_TRACKING_URI": store}
    _kill_after_a_backup(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL), home)

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after epoch" in done.stdout, done.stdout
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("digits").experiment_id
    parents = client.search_runs([experiment], filter_string="attributes.run_name LIKE 'ablate%'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    cells = child_runs(client, parents[0].info.run_id)
    assert len(cells) == 2 and {r.info.status for r in cells} == {"FINISHED"}
    for cell in cells:
        steps = [m.step for m in client.get_metric_history(cell.info.run_id, "loss")]
        assert sorted(steps) == list(range(1, 41))
    assert _backups(home) == []
