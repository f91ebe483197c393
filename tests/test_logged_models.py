"""A training run's model is an MLflow Model: pyfunc loads it from `runs:/<id>/model`,
`mlflow models serve` answers HTTP requests with it; the splits are the run's inputs and the
run carries MLflow's standard description, source and git tags."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from zoo.logged_models import pip_requirements
from zoo.recipe import load_recipe
from zoo.training.trainer import train


@pytest.fixture(scope="module")
def trained(mlflow_store, tmp_path_factory):
    recipe = load_recipe("digits/mlp", ["training.epochs=2", "model.widths=[16]",
                                        "name=logged-model-test"])
    return train(recipe, verbose=0, model_dir=tmp_path_factory.mktemp("models"))


def test_pyfunc_predicts_class_probabilities_from_raw_inputs(trained):
    import mlflow.pyfunc

    from zoo.data import load_dataset

    splits = load_dataset("digits", 0.1)
    loaded = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")
    probabilities = np.asarray(loaded.predict(splits.x_test[:7]))
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, trained.model.predict(splits.x_test[:7], verbose=0),
                               rtol=1e-5, atol=1e-6)
    signature = loaded.metadata.get_input_schema().inputs[0]
    assert signature.shape == (-1, 8, 8, 1)


def test_the_model_is_a_logged_model_of_the_run_with_pinned_requirements(trained, mlflow_client):
    import mlflow

    run = mlflow_client.get_run(trained.run_id)
    logged = mlflow_client.get_logged_model(trained.model_id)
    assert logged.source_run_id == trained.run_id and logged.name == "model"
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY")
    assert logged.params["data.dataset"] == "digits"
    # Final test metrics are linked to the model and to the test split.
    linked = {m.key: m for m in logged.metrics or []}
    assert linked["test_accuracy"].value == pytest.approx(trained.test_accuracy)
    assert linked["test_accuracy"].dataset_name == "digits-test"
    assert run.outputs.model_outputs[0].model_id == trained.model_id
    folder = mlflow.artifacts.download_artifacts(f"runs:/{trained.run_id}/model")
    requirements = open(os.path.join(folder, "requirements.txt")).read().split()
    assert requirements == pip_requirements()
    assert any(r.startswith("keras==") for r in requirements)
    builds = ("tensorflow-cpu==", "tensorflow==", "tensorflow[")
    assert any(r.startswith(builds) for r in requirements)
    # The saved Keras file is the inference copy: plain Keras loads it in safe mode.
    import keras

    model = keras.saving.load_model(os.path.join(folder, "data", "model.keras"), safe_mode=True)
    assert getattr(model, "optimizer", None) is None


def test_the_splits_are_the_run_inputs_with_digests(trained, mlflow_client):
    run = mlflow_client.get_run(trained.run_id)
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["test"].name == "digits-test"
    assert len({d.digest for d in inputs.values()}) == 3
    profile = json.loads(inputs["training"].profile)
    assert profile["features_shape"][1:] == [8, 8, 1]


def test_the_run_describes_itself_with_mlflow_standard_tags(trained, mlflow_client):
    tags = mlflow_client.get_run(trained.run_id).data.tags
    assert "zoo train" in tags["mlflow.note.content"]
    assert f"seed={trained.recipe.seed}" in tags["mlflow.note.content"]
    assert tags["mlflow.source.name"] == "recipes/digits/mlp.yaml"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"]
    if tags["zoo.git_commit"] != "unknown":
        assert tags["mlflow.source.git.commit"] == tags["zoo.git_commit"].removesuffix("-dirty")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.processes
def test_mlflow_models_serve_answers_an_http_request(trained, mlflow_store):
    """The server is the test's own, on 127.0.0.1 and a free port: no other address is used."""
    from zoo.data import load_dataset

    port = _free_port()
    bin_dir = os.path.dirname(sys.executable)  # mlflow runs uvicorn from the PATH
    server = subprocess.Popen(
        [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m",
         f"runs:/{trained.run_id}/model", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store,
             "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert server.poll() is None, server.stderr.read()[-3000:]
        x = load_dataset("digits", 0.1).x_test[:3]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        probabilities = np.asarray(answer["predictions"])
        assert probabilities.shape == (3, 10)
        np.testing.assert_allclose(probabilities, trained.model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_system_metrics_are_logged_when_asked_for(mlflow_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    recipe = load_recipe("digits/mlp", ["training.epochs=30", "name=system-metrics-test"])
    watched = train(recipe, verbose=0, model_dir=tmp_path, system_metrics=True)
    history = mlflow_client.get_metric_history(watched.run_id,
                                               "system/cpu_utilization_percentage")
    assert history and all(0 <= m.value <= 100 for m in history)
    assert "system/system_memory_usage_megabytes" in mlflow_client.get_run(
        watched.run_id).data.metrics
    quiet = train(recipe.with_overrides({"seed": 1}), verbose=0, model_dir=tmp_path,
                  system_metrics=False)
    assert not [k for k in mlflow_client.get_run(quiet.run_id).data.metrics
                if k.startswith("system/")]
