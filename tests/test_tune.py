"""Tuning: space validation, MLflow nesting, the tuned recipe, resume, refusal, edge warnings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_zoo, wait_for_child_runs
from zoo.errors import RecipeError
from zoo.recipe import load_recipe
from zoo.training.trainer import train
from zoo.workflows.tune import TuneStateError, edge_warnings, refine_space, tune

REPO = Path(__file__).resolve().parents[1]
SPACE = ("tune.space={optimizer.learning_rate: {type: float, min: 1.0e-3, max: 1.0e-1, "
         "sampling: log}, model.dropout: {type: choice, values: [0.0, 0.2]}}")
SMALL = ["data.batch_size=128", "model.widths=[8]", "training.epochs=1", "tune.max_trials=3",
         "tune.algorithm=random", SPACE]


def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipes" / "small.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"extends: {REPO / 'recipes/digits/mlp.yaml'}\nname: small\n")
    return path


def children(mlflow_client, parent_run_id: str):
    from zoo.tracking import child_runs

    return child_runs(mlflow_client, parent_run_id)


@pytest.mark.parametrize("override,message", [
    ("tune.space={model.dropot: {type: bool}}", "tune.space.model.dropot: not a recipe key"),
    ("tune.space={model.dropout: {type: float, min: 0, max: 1.5}}", "value 1.5 in its range"),
    ("tune.space={optimizer.learning_rate: {type: float, min: 0, max: 1, sampling: log}}",
     "log sampling needs min > 0"),
    ("tune.space={model.dropout: {type: float, min: 0.5, max: 0.1}}", "must be below max"),
    ("tune.space={model.activation: {type: choice, values: [relu, swishy]}}",
     "value 'swishy' in its range"),
    ("tune.space={model.dropout: {type: normal}}", "'float', 'int', 'choice', 'bool'"),
    ("tune.algorithm=genetic", "'random', 'grid', 'bayesian' or 'hyperband'"),
    ("tune.objective=test_accuracy", "tune.objective"),
])
def test_space_is_validated_at_load_time(override, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
        load_recipe("digits/mlp", [override])


def test_tune_nests_trials_writes_a_tuned_recipe_and_resumes(tmp_path, mlflow_client):
    path = recipe_file(tmp_path)
    recipe = load_recipe(path, SMALL)
    result = tune(recipe, directory=tmp_path / "tuning")

    runs = children(mlflow_client, result.parent_run_id)
    assert len(runs) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["zoo.trial_id"] for r in runs} == {t["trial_id"] for t in result.trials}
    parent = mlflow_client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["tune.algorithm"] == "random"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(result.best_score)
    assert "small.tuned.yaml" in {a.path for a in
                                  mlflow_client.list_artifacts(result.parent_run_id)}
    # Each child's params are its recipe, trial values applied.
    for run in runs:
        lr = float(run.data.tags["zoo.trial.optimizer.learning_rate"])
        assert float(run.data.params["optimizer.learning_rate"]) == pytest.approx(lr)

    # The tuned recipe is complete and trains to the best trial's result.
    assert result.tuned_recipe_path == path.with_name("small.tuned.yaml")
    tuned = load_recipe(result.tuned_recipe_path)
    again = train(tuned, track=False, verbose=0, model_dir=tmp_path / "models")
    assert max(again.history["val_accuracy"]) == pytest.approx(result.best_score)

    # Running the same tune again trains nothing.
    resumed = tune(load_recipe(path, SMALL), directory=tmp_path / "tuning")
    assert resumed.parent_run_id == result.parent_run_id
    assert resumed.best_values == result.best_values
    assert len(children(mlflow_client, result.parent_run_id)) == 3


def test_a_changed_search_is_refused_unless_overwritten(tmp_path, mlflow_store):
    path = recipe_file(tmp_path)
    first = [*SMALL, "tune.max_trials=1"]
    tune(load_recipe(path, first), directory=tmp_path / "tuning")
    changed = [*first, "tune.space={model.dropout: {type: choice, values: [0.0, 0.5]}}"]
    with pytest.raises(TuneStateError, match="used another space"):
        tune(load_recipe(path, changed), directory=tmp_path / "tuning")
    with pytest.raises(TuneStateError, match="used another recipe"):
        tune(load_recipe(path, [*first, "model.widths=[4]"]), directory=tmp_path / "tuning")
    result = tune(load_recipe(path, changed), directory=tmp_path / "tuning", overwrite=True)
    assert set(result.best_values) == {"model.dropout"}


def test_edge_warning_and_refined_space():
    recipe = load_recipe("digits/mlp", [
        "tune.space={optimizer.learning_rate: {type: float, min: 1.0e-4, max: 1.0e-1, "
        "sampling: log}, model.dropout: {type: float, min: 0.0, max: 0.5}, "
        "model.activation: {type: choice, values: [relu, tanh, elu]}}"])
    at_edge = {"optimizer.learning_rate": 0.095, "model.dropout": 0.25}
    warnings = edge_warnings(recipe, at_edge)
    assert len(warnings) == 1
    assert "optimizer.learning_rate=0.095 lies at the upper edge" in warnings[0]
    assert edge_warnings(recipe, {"optimizer.learning_rate": 0.003, "model.dropout": 0.0})[0] \
        .startswith("the best model.dropout=0 lies at the lower edge")

    top = [{"optimizer.learning_rate": 0.01, "model.dropout": 0.2, "model.activation": "relu"},
           {"optimizer.learning_rate": 0.001, "model.dropout": 0.3, "model.activation": "elu"}]
    space = refine_space(recipe, top)
    # log range: 3 decades, margin 0.75 decade around [1e-3, 1e-2]
    assert space["optimizer.learning_rate"]["min"] == pytest.approx(10 ** -3.75)
    assert space["optimizer.learning_rate"]["max"] == pytest.approx(10 ** -1.25)
    assert space["model.dropout"]["min"] == pytest.approx(0.2 - 0.125)
    assert space["model.dropout"]["max"] == pytest.approx(0.3 + 0.125)
    assert space["model.activation"]["values"] == ["relu", "elu"]


# Slow: it races a real SIGTERM against a running tune, which on a loaded machine can arrive
# after the last trial (exit 0); one fresh-clone run also saw the stopping process crash (-11).
@pytest.mark.slow
def test_killed_tune_resumes_to_exactly_max_trials(tmp_path, mlflow_client):
    path = recipe_file(tmp_path)
    argv = ["tune", str(path), *SMALL, "tune.max_trials=4", "training.epochs=3"]
    process = start_zoo(argv, tmp_path)
    try:
        parent_id, finished = wait_for_child_runs(mlflow_client, "tune small", "FINISHED", 2,
                                                  seconds=240)
        assert len(finished) >= 2
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert mlflow_client.get_run(parent_id).info.status == "KILLED"

    done = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "ZOO_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = children(mlflow_client, parent_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    trial_ids = [r.data.tags["zoo.trial_id"] for r in finished]
    assert len(finished) == 4 and len(set(trial_ids)) == 4
    assert mlflow_client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.slow
def test_distributed_tune_records_every_trial_once(tmp_path, mlflow_client):
    path = recipe_file(tmp_path)
    recipe = load_recipe(path, [*SMALL, "tune.max_trials=4"])
    result = tune(recipe, directory=tmp_path / "tuning", workers=2)
    runs = children(mlflow_client, result.parent_run_id)
    trial_ids = [r.data.tags["zoo.trial_id"] for r in runs]
    assert sorted(trial_ids) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_stop_between_a_trials_run_and_its_record_does_not_train_it_twice(
        tmp_path, mlflow_client, monkeypatch):
    # The stop lands after trial 1's run has FINISHED but before Keras Tuner records the trial:
    # the resumed search is given trial 1 again and must reuse its run, not train another.
    from zoo.workflows import tune as tune_module

    recipe = load_recipe(recipe_file(tmp_path), [*SMALL, "tune.max_trials=2"])
    progress = tune_module.ZooTuner._progress

    def stop_after_trial_1(self, trial_id, values, score):
        if trial_id == "1":
            raise KeyboardInterrupt("SIGTERM")
        return progress(self, trial_id, values, score)

    monkeypatch.setattr(tune_module.ZooTuner, "_progress", stop_after_trial_1)
    with pytest.raises(KeyboardInterrupt):
        tune(recipe, directory=tmp_path / "tuning")
    monkeypatch.setattr(tune_module.ZooTuner, "_progress", progress)
    trained = []
    monkeypatch.setattr(tune_module, "train", lambda *a, **k: trained.append(a) or train(*a, **k))
    result = tune(recipe, directory=tmp_path / "tuning")
    runs = children(mlflow_client, result.parent_run_id)
    assert sorted(r.data.tags["zoo.trial_id"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert trained == []  # trial 0 was recorded, trial 1's run was reused
    assert len(result.trials) == 1 and result.trials[0]["trial_id"] == "1"
