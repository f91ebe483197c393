"""`zoo register`: shipped models in the MLflow Model Registry, checked before they are parsed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from zoo.errors import ModelFileError, UnknownNameError
from zoo.pretrained.loader import PRETRAINED_DIR, manifest_entry
from zoo.workflows.register import register_pretrained, registered_name

ENTRY = "digits/mlp"


def test_an_entry_becomes_a_registered_version_with_the_shipped_alias(mlflow_client):
    import mlflow.pyfunc

    import zoo
    from zoo.data import load_dataset

    (first,) = register_pretrained([ENTRY])
    assert first.model_name == registered_name(ENTRY) == "zoo-digits-mlp"
    registered = mlflow_client.get_registered_model(first.model_name)
    assert registered.description == (PRETRAINED_DIR / f"{ENTRY}.md").read_text()
    version = mlflow_client.get_model_version_by_alias(first.model_name, "shipped")
    assert str(version.version) == first.version
    entry = manifest_entry(ENTRY)
    assert version.tags["zoo.sha256"] == entry["sha256"]
    assert version.tags["zoo.weights_sha256"] == entry["weights_sha256"]
    assert float(version.tags["zoo.test_accuracy_mean"]) == pytest.approx(
        entry["metrics"]["test_accuracy"]["mean"], abs=1e-4)

    x = load_dataset("digits", 0.1).x_test[:5]
    served = mlflow.pyfunc.load_model(f"models:/{first.model_name}@shipped")
    np.testing.assert_allclose(np.asarray(served.predict(x)),
                               zoo.load(ENTRY).predict(x, verbose=0), rtol=1e-5, atol=1e-6)

    (again,) = register_pretrained([ENTRY])  # the same file: its version is reused
    assert (again.version, again.created) == (first.version, False)
    assert len(mlflow_client.search_model_versions(f"name = '{first.model_name}'")) == 1


def test_a_corrupted_file_is_refused_before_anything_is_registered(mlflow_client, tmp_path):
    directory = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED_DIR, directory)
    path = directory / manifest_entry(ENTRY)["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = len(mlflow_client.search_model_versions(f"name = '{registered_name(ENTRY)}'"))
    with pytest.raises(ModelFileError, match="sha256"):
        register_pretrained([ENTRY], directory=directory)
    after = len(mlflow_client.search_model_versions(f"name = '{registered_name(ENTRY)}'"))
    assert after == before


def test_an_unknown_entry_is_named(mlflow_client):
    with pytest.raises(UnknownNameError, match="digits/nope"):
        register_pretrained(["digits/nope"])
