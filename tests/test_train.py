"""Training end to end into a private MLflow store: what is logged, how runs end, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import keras
import pytest

from zoo import cli
from zoo.errors import TrainingError
from zoo.recipe import load_recipe
from zoo.training.model_files import save_model_atomically
from zoo.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=digits", "data.batch_size=64", "model.name=mlp", "model.widths=[16]",
        "training.epochs=2"]


def tiny(*overrides: str):
    return load_recipe("digits/mlp", [*TINY, f"name=test-{uuid.uuid4().hex[:8]}", *overrides])


class _Raise(keras.callbacks.Callback):
    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        raise self.error


def test_run_logs_params_metrics_tags_and_artifacts(mlflow_client, model_dir):
    recipe = tiny()
    result = train(recipe, verbose=0, model_dir=model_dir)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == recipe.name

    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.name == "digits"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    params = run.data.params
    assert params["model.widths"] == "[16]"
    assert params["optimizer.name"] == "adam"
    assert params["data.dataset"] == "digits"
    assert set(params) == set(recipe.flat())

    metrics = run.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert metrics["test_loss"] == pytest.approx(result.test_loss)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = mlflow_client.get_metric_history(result.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    assert 0.0 <= result.test_accuracy <= 1.0

    tags = run.data.tags
    assert tags["zoo.fingerprint"] == recipe.fingerprint
    assert tags["zoo.recipe_path"] == "recipes/digits/mlp.yaml"
    assert json.loads(tags["zoo.versions"])["keras"] == keras.__version__
    assert tags["zoo.device"].startswith(("CPU", "/physical_device:GPU"))
    assert tags["zoo.git_commit"]

    artifacts = {a.path for a in mlflow_client.list_artifacts(result.run_id)}
    assert {"recipe.yaml", "learning_curves.png", "confusion_matrix.png"} <= artifacts
    # The model is the run's MLflow Model (tests/test_logged_models.py), not a plain file.
    assert [o.model_id for o in run.outputs.model_outputs] == [result.model_id]
    local = Path(mlflow_client.download_artifacts(result.run_id, "recipe.yaml"))
    assert load_recipe(local).fingerprint == recipe.fingerprint

    assert result.model_path.is_file() and result.model_path.parent.parent == model_dir
    assert not list(model_dir.rglob("*.tmp.keras"))
    keras.saving.load_model(result.model_path, safe_mode=True)


def _latest_run(mlflow_client, name):
    experiment = mlflow_client.get_experiment_by_name("digits")
    runs = mlflow_client.search_runs([experiment.experiment_id],
                                     filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1
    return runs[0]


def test_failing_run_ends_failed_and_writes_no_model(mlflow_client, model_dir):
    recipe = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        train(recipe, verbose=0, model_dir=model_dir, callbacks=[_Raise(RuntimeError("boom"))])
    assert _latest_run(mlflow_client, recipe.name).info.status == "FAILED"
    assert not model_dir.exists() or not list(model_dir.rglob("*.keras"))


def test_interrupted_run_ends_killed(mlflow_client, model_dir):
    recipe = tiny()
    with pytest.raises(KeyboardInterrupt):
        train(recipe, verbose=0, model_dir=model_dir, callbacks=[_Raise(KeyboardInterrupt())])
    assert _latest_run(mlflow_client, recipe.name).info.status == "KILLED"


def test_nan_loss_fails_the_run_with_advice(mlflow_client, model_dir):
    recipe = tiny("optimizer.name=sgd", "optimizer.learning_rate=1e30")
    with pytest.raises(TrainingError, match="loss became nan.*optimizer.learning_rate"):
        train(recipe, verbose=0, model_dir=model_dir)
    assert _latest_run(mlflow_client, recipe.name).info.status == "FAILED"
    assert not model_dir.exists() or not list(model_dir.rglob("*.keras"))


@pytest.mark.processes
def test_sigterm_stops_training_and_marks_the_run_killed(mlflow_client, tmp_path):
    name = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ZOO_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "zoo.cli", "train", str(REPO / "recipes/digits/mlp.yaml"),
               f"name={name}", "training.epochs=10000"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            runs, deadline = [], time.monotonic() + 180
            while time.monotonic() < deadline and not runs:
                time.sleep(1)
                experiment = mlflow_client.get_experiment_by_name("digits")
                if experiment is not None:
                    runs = mlflow_client.search_runs(
                        [experiment.experiment_id],
                        filter_string=f"attributes.run_name = '{name}'")
            assert runs and runs[0].info.status == "RUNNING"
            time.sleep(2)  # let it train a little
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            process.kill()
    message = log.read_text()
    assert process.returncode == 130, message
    assert "SIGTERM: stopping after this batch" in message
    assert "marked KILLED" in message
    assert mlflow_client.get_run(runs[0].info.run_id).info.status == "KILLED"
    assert not list(tmp_path.rglob("*.keras"))


def test_same_seed_same_weights_other_seed_other_weights(model_dir):
    # Dropout and batch norm included: both draw randomness or keep state during training.
    overrides = ["model.name=cnn", "model.widths=[8]", "model.dropout=0.2", "model.dense=[8]"]
    first = train(tiny(*overrides), track=False, verbose=0, model_dir=model_dir)
    second = train(tiny(*overrides), track=False, verbose=0, model_dir=model_dir)
    other = train(tiny(*overrides, "seed=1"), track=False, verbose=0, model_dir=model_dir)
    assert first.weights_sha256 == second.weights_sha256
    assert first.test_loss == second.test_loss
    assert other.weights_sha256 != first.weights_sha256


def test_weights_do_not_depend_on_what_the_process_did_before(model_dir, tmp_path):
    # A fresh process builds MNIST-1D (which seeds and draws NumPy's global generator); here the
    # data set comes from the cache after other runs. Both must train the same weights, or a
    # model built by `make zoo` after other entries could not be reproduced alone.
    overrides = ["training.epochs=1", "seed=2"]
    train(load_recipe("mnist1d/linear", ["training.epochs=1"]), track=False, verbose=0,
          model_dir=model_dir)
    here = train(load_recipe("mnist1d/linear", overrides), track=False, verbose=0,
                 model_dir=model_dir)
    fresh = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", str(REPO / "recipes/mnist1d/linear.yaml"),
         *overrides, "--no-track", "--json"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "ZOO_HOME": str(tmp_path)})
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout.splitlines()[-1])["weights_sha256"] == here.weights_sha256


def test_json_is_the_last_stdout_line(capsys, mlflow_store, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    status = cli.main(["train", str(REPO / "recipes/digits/mlp.yaml"), *TINY, "--json"])
    assert status == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert set(summary) >= {"run_id", "test_accuracy", "test_loss", "model_path", "fingerprint",
                            "weights_sha256"}
    assert Path(summary["model_path"]).is_file()
    assert any(line.startswith("test_accuracy") for line in out)


def test_atomic_save_leaves_nothing_when_saving_fails(tmp_path):
    class Broken:
        def save(self, path):
            Path(path).write_bytes(b"half")
            raise OSError("disk full")

    target = tmp_path / "m" / "model.keras"
    with pytest.raises(OSError):
        save_model_atomically(Broken(), target)
    assert list(target.parent.iterdir()) == []


def test_no_validation_split_trains_on_all_of_train_and_logs_no_val_metrics(mlflow_client,
                                                                             model_dir):
    result = train(tiny("data.validation_split=0"), verbose=0, model_dir=model_dir)
    assert set(result.history) >= {"loss", "accuracy"}
    assert not [key for key in result.history if key.startswith("val_")], result.history
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.validation_split"] == "0.0"
    assert not [key for key in run.data.metrics if key.startswith("val_")]
    assert 0.0 <= result.test_accuracy <= 1.0


def test_validation_metrics_are_what_keras_evaluate_computes(model_dir):
    import numpy as np

    from zoo.training.trainer import prepare

    # A penalty and label smoothing: Keras' val_loss includes both.
    recipe = tiny("regularization.l2=1e-3", "regularization.label_smoothing=0.1",
                  "model.normalization=batch", "model.dropout=0.3")
    result = train(recipe, track=False, verbose=0, model_dir=model_dir)
    splits = prepare(recipe).splits
    targets = np.eye(splits.num_classes, dtype=np.float32)[splits.y_val]
    loss, accuracy = result.model.evaluate(splits.x_val, targets, batch_size=32, verbose=0)
    assert result.history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert result.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)
    assert len(result.history["val_loss"]) == result.epochs


def test_the_test_metrics_are_the_final_weights_though_the_evaluation_ran_while_training(
        model_dir, monkeypatch):
    import threading

    import numpy as np

    from zoo.training import trainer

    # The warm-up runs the test evaluation once on the weights after the first epoch; the
    # result must still be computed afresh from the weights training ends with. Training
    # waits here for the warm-up's evaluation, which would otherwise come after these few
    # short epochs.
    during_training, evaluated = [], threading.Event()
    warm_up = trainer._warm_up_end_of_run

    def recording(evaluate_test, logging):
        during_training.append(float(evaluate_test()[0]))
        evaluated.set()
        warm_up(evaluate_test, logging)

    class WaitForTheWarmUp(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                evaluated.wait(60)

    monkeypatch.setattr(trainer, "_warm_up_end_of_run", recording)
    recipe = tiny("training.epochs=4", "model.normalization=batch", "model.dropout=0.3")
    result = train(recipe, track=False, verbose=0, model_dir=model_dir,
                   callbacks=[WaitForTheWarmUp()])
    splits = trainer.prepare(recipe).splits
    targets = np.eye(splits.num_classes, dtype=np.float32)[splits.y_test]
    loss, accuracy = result.model.evaluate(splits.x_test, targets, batch_size=32, verbose=0)
    assert len(during_training) == 1 and during_training[0] != pytest.approx(loss, rel=1e-3)
    assert result.test_loss == pytest.approx(loss, rel=1e-5)
    assert result.test_accuracy == pytest.approx(accuracy, abs=1e-6)


def test_the_end_of_run_warm_up_starts_once_after_the_first_epoch(monkeypatch):
    # Not while the first epoch compiles, which keeps more than one core busy.
    from zoo import plots
    from zoo.training import trainer

    started = []

    def warm_up_aside(work):
        started.append(work)
        return object()  # stands for the thread

    monkeypatch.setattr(plots, "warm_up_aside", warm_up_aside)
    work = object()
    warm_up = trainer._WarmUpAfterFirstEpoch(work)
    warm_up.on_train_begin()
    warm_up.on_epoch_begin(0)
    assert started == []
    warm_up.on_epoch_end(0)
    warm_up.on_epoch_end(1)
    assert started == [work]
