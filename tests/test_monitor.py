"""Training monitors: they observe without changing the weights, log per-layer metrics and
figures to MLflow, and flag the failure modes they are meant to catch (and not healthy runs)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from zoo.errors import RecipeError
from zoo.recipe import load_recipe
from zoo.training.trainer import train

MONITOR = ["monitor.enabled=true"]


def _recipe(name: str, *overrides: str):
    return load_recipe(name, [f"name=test-{uuid.uuid4().hex[:8]}", *overrides])


def _warnings(capsys) -> list[str]:
    """The warning lines printed, without the end-of-run summary."""
    return [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("monitor: ") and "warning(s)" not in line
            and not line.startswith("monitor: no warnings")]


def test_the_monitor_section_is_validated_and_not_fingerprinted():
    plain = load_recipe("digits/mlp")
    monitored = load_recipe("digits/mlp", ["monitor.enabled=true", "monitor.every=3"])
    assert (monitored.monitor.enabled, monitored.monitor.every) == (True, 3)
    assert plain.monitor.enabled is False
    assert monitored.fingerprint == plain.fingerprint
    with pytest.raises(RecipeError, match="monitor.every"):
        load_recipe("digits/mlp", ["monitor.every=0"])
    with pytest.raises(RecipeError, match="monitor.histograms: unknown key"):
        load_recipe("digits/mlp", ["monitor.histograms=true"])


def test_the_old_diagnostics_keys_still_load_with_a_warning(tmp_path):
    with pytest.warns(FutureWarning) as caught:
        old = load_recipe("digits/mlp", ["diagnostics.monitor=true", "diagnostics.every=3"])
    assert sorted(str(w.message).split(": ", 1)[1] for w in caught) == [
        "recipe key diagnostics.every is now monitor.every; the old name is refused from zoo 0.3",
        "recipe key diagnostics.monitor is now monitor.enabled; the old name is refused from zoo "
        "0.3"]
    assert (old.monitor.enabled, old.monitor.every) == (True, 3)
    assert "diagnostics" not in old.resolved()
    path = tmp_path / "old.yaml"
    base = Path(__file__).parents[1] / "recipes" / "digits" / "mlp.yaml"
    path.write_text(f"extends: {base}\ndiagnostics:\n  monitor: true\n")
    with pytest.warns(FutureWarning, match="old.yaml: recipe key diagnostics.monitor"):
        assert load_recipe(path).monitor.enabled is True
    # An old override wins over the new section's default and over the recipe's own value.
    with pytest.warns(FutureWarning):
        assert load_recipe("digits/mlp", ["monitor.enabled=true",
                                          "diagnostics.monitor=false"]).monitor.enabled is False
    with pytest.raises(RecipeError, match="diagnostics.histograms: unknown key"):
        load_recipe("digits/mlp", ["diagnostics.histograms=true"])


# Dropout, batch norm and augmentation each draw randomness or keep state while training: a
# monitor that called the model in training mode would change what the run learns.
@pytest.mark.parametrize("name,overrides", [
    ("digits/mlp", ["training.epochs=2"]),
    ("digits/cnn_aug", ["training.epochs=1", "model.widths=[8,8]", "model.dropout=0.3",
                        "model.dense=[8]"]),
])
def test_monitoring_does_not_change_the_trained_weights(name, overrides, model_dir):
    plain = train(_recipe(name, *overrides), track=False, verbose=0, model_dir=model_dir)
    monitored = train(_recipe(name, *overrides, *MONITOR), track=False, verbose=0,
                      model_dir=model_dir)
    assert monitored.weights_sha256 == plain.weights_sha256
    assert monitored.test_loss == plain.test_loss


def test_monitored_run_logs_metrics_tags_and_figures(mlflow_client, model_dir):
    recipe = _recipe("digits/cnn", "training.epochs=3", "model.widths=[8,8]",
                     "monitor.enabled=true", "monitor.every=1")
    result = train(recipe, verbose=0, model_dir=model_dir)
    run = mlflow_client.get_run(result.run_id)
    for key in ("block1_conv1/update_ratio", "block1_conv1/grad_norm", "classifier/grad_norm",
                "block1_conv1_act/dead_fraction", "block2_conv2_act/act_mean",
                "block2_conv2_act/act_std"):
        history = mlflow_client.get_metric_history(result.run_id, f"monitor/{key}")
        assert [m.step for m in history] == [1, 2, 3], key
    ratios = [m.value for m in mlflow_client.get_metric_history(
        result.run_id, "monitor/block1_conv1/update_ratio")]
    assert all(0 < r < 1 for r in ratios)
    assert run.data.tags["monitor.warnings"].isdigit()
    artifacts = {a.path for a in mlflow_client.list_artifacts(result.run_id, "monitor")}
    assert artifacts == {f"monitor/{name}" for name in (
        "warnings.txt", "statistics.csv", "activations.png", "gradients.png", "curves.png",
        "filters.png")}
    for name in ("activations.png", "curves.png", "filters.png"):  # drawn in a child process
        png = Path(mlflow_client.download_artifacts(result.run_id, f"monitor/{name}"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_mlflow_gets_at_most_max_points_and_the_csv_every_epoch(mlflow_client, model_dir,
                                                                  monkeypatch):
    import csv

    from zoo.training.monitor import callback

    monkeypatch.setattr(callback, "MAX_LOGGED_POINTS", 2)
    recipe = _recipe("digits/mlp", "training.epochs=5", "model.widths=[16]",
                     "monitor.enabled=true")
    result = train(recipe, verbose=0, model_dir=model_dir)
    history = mlflow_client.get_metric_history(result.run_id, "monitor/block1_dense/grad_norm")
    # 5 monitored epochs into at most 2 points: every 3rd, and the last.
    assert [m.step for m in history] == [3, 5]
    table = Path(mlflow_client.download_artifacts(result.run_id, "monitor/statistics.csv"))
    rows = list(csv.DictReader(table.open()))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4", "5"]
    logged = {m.step: m.value for m in history}
    for row in rows:
        if int(row["epoch"]) in logged:
            assert float(row["monitor/block1_dense/grad_norm"]) == logged[int(row["epoch"])]


def test_every_n_epochs(mlflow_client, model_dir):
    recipe = _recipe("digits/mlp", "training.epochs=4", "model.widths=[16]",
                     "monitor.enabled=true", "monitor.every=2")
    result = train(recipe, verbose=0, model_dir=model_dir)
    history = mlflow_client.get_metric_history(result.run_id, "monitor/block1_dense/grad_norm")
    assert [m.step for m in history] == [2, 4]
    # A sequence model has no 2D filters to draw.
    artifacts = {a.path for a in mlflow_client.list_artifacts(result.run_id, "monitor")}
    assert "monitor/filters.png" not in artifacts


def test_an_error_in_the_first_epoch_leaves_no_probe_thread_behind(model_dir):
    """Keras skips `on_train_end` when `fit` raises; a probe thread still waiting for the first
    epoch to end would then keep the process from exiting."""
    import threading

    import keras

    class Fails(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise RuntimeError("failed on purpose")

    recipe = _recipe("digits/mlp", "training.epochs=2", "model.widths=[16]", *MONITOR)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        train(recipe, track=False, verbose=0, model_dir=model_dir, callbacks=[Fails()])
    assert not [t.name for t in threading.enumerate() if t.name.startswith("zoo-monitor")]


@pytest.mark.parametrize("jit", [False, True], ids=["no-xla", "xla"])
def test_a_snapshot_keeps_its_values_while_training_goes_on(jit):
    """Snapshots are read values, not copies: TensorFlow must give the variables new storage
    when training writes them, or the probe would measure the weights of another moment."""
    import numpy as np

    from zoo.training.monitor.probe import Probe
    from zoo.training.trainer import prepare

    prepared = prepare(_recipe("digits/mlp", "model.widths=[16]"))
    model = prepared.model
    model.jit_compile = jit
    probe = Probe(model, prepared.splits.x_train[:8],
                  np.eye(10, dtype=np.float32)[prepared.splits.y_train[:8]])
    eager = probe.snapshot()  # read one by one, before `prepare`
    probe.prepare()
    traced = probe.snapshot()
    before = [np.array(v) for v in eager]
    assert all(np.array_equal(a, b) for a, b in zip(before, traced, strict=True))
    model.fit(prepared.train_data, epochs=1, steps_per_epoch=prepared.steps_per_epoch,
              verbose=0)
    after = probe.snapshot()
    assert not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    for snapshot in (eager, traced):
        assert all(np.array_equal(a, b) for a, b in zip(before, snapshot, strict=True))


def test_deep_sigmoid_mlp_is_flagged_for_vanishing_gradients(capsys, model_dir):
    train(_recipe("mnist1d/mlp_sigmoid", "training.epochs=1", *MONITOR), track=False,
          verbose=0, model_dir=model_dir)
    vanishing = {line.split()[1] for line in _warnings(capsys) if "vanishing" in line}
    # The first layers, farthest from the loss, lose the most; the classifier is the reference.
    assert {"block1_dense", "block2_dense", "block3_dense"} <= vanishing
    assert "classifier" not in vanishing and "block6_dense" not in vanishing


def test_relu_mlp_is_not_flagged(capsys, model_dir):
    train(_recipe("mnist1d/mlp", "training.epochs=1", *MONITOR), track=False, verbose=0,
          model_dir=model_dir)
    assert _warnings(capsys) == []


def test_zero_initializer_is_flagged(capsys, model_dir):
    train(_recipe("digits/mlp", "training.epochs=1", "model.initializer=zeros", *MONITOR),
          track=False, verbose=0, model_dir=model_dir)
    lines = _warnings(capsys)
    symmetric = {line.split()[1] for line in lines if "identical weights" in line}
    dead = {line.split()[1] for line in lines if "ReLU units are dead" in line}
    assert symmetric == {"block1_dense", "block2_dense", "classifier"}
    assert dead == {"block1_act", "block2_act"}
    assert any("block1_dense gradient norm 0.0e+00" in line for line in lines)


def test_monitor_on_a_dataset_of_unknown_length():
    # Without a known epoch length there is no last step to snapshot before: the ratio is the
    # epoch's net change divided by its steps.
    import keras
    import numpy as np
    import tensorflow as tf

    from zoo.training.monitor import TrainingMonitor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy())
    data = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda *_: True).batch(16)
    assert data.cardinality() == tf.data.UNKNOWN_CARDINALITY
    lines = []
    monitor = TrainingMonitor(x[:32], y[:32], print_fn=lines.append)
    model.fit(data, epochs=2, verbose=0, shuffle=False, callbacks=[monitor])
    ratios = [value for _, value in monitor.history["monitor/hidden/update_ratio"]]
    assert len(ratios) == 2 and all(0 < r < 1 for r in ratios)
    assert "monitor/hidden/saturated_fraction" in monitor.history
    assert lines[-1].startswith("monitor: ")
