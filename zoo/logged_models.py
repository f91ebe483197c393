"""A trained model as an MLflow Model of its run, and the data splits as the run's inputs.

The model is saved with MLflow's Keras flavor (`mlflow.keras.save_model`: the `.keras` file,
`MLmodel`, a signature, an input example and the environment) and logged as an MLflow 3 logged
model of the run, so `runs:/<run id>/model` and `models:/<model id>` load it with
`mlflow.pyfunc.load_model` (class probabilities from raw inputs) and `mlflow models serve`
serves it. What it saves is the inference copy (no optimizer), which loads in plain Keras with
`safe_mode=True` and no zoo code.

`mlflow.keras.log_model` does the same in one call, and more that training runs do not need:
it loads the model back to check the input example (0.5 s or more), reads every metric's
history to link this step's values to the model (one query per metric), and finds the active
fluent run, which the zoo's runs are not. The steps below are the ones it takes otherwise.
The requirements are the project's own pins of what loading and serving need (the zoo's
dependency metadata, written from pyproject.toml), never inferred at run time: inference
imports the model in a subprocess for seconds.
"""

from __future__ import annotations

import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "model"  # runs:/<run id>/model
EXAMPLE_ROWS = 2  # examples in the input example: enough to show the batch axis
# What loading and serving a zoo model needs, by distribution name.
_SERVING_NEEDS = ("keras", "tensorflow", "tensorflow-cpu", "numpy", "mlflow")


def pip_requirements() -> list[str]:
    """The project's pins of what loading and serving a zoo model needs, as installed here
    (`tensorflow-cpu` or `tensorflow[and-cuda]`, whichever this environment has)."""
    pins = []
    for requirement in metadata.requires("zoo") or []:
        spec = requirement.split(";", 1)[0].strip()
        name = re.split(r"[\[=<>!~ ]", spec, maxsplit=1)[0].lower()
        if name not in _SERVING_NEEDS:
            continue
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # the other TensorFlow build
        pins.append(spec)
    return sorted(set(pins))


def signature(input_shape: tuple[int, ...], num_classes: int):
    """Raw float32 inputs of `input_shape` (any batch size) -> class probabilities."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    # Unnamed tensors: pyfunc then hands the model the array itself (a named one reaches Keras
    # as a list, which it accepts with a warning at every call).
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]))


def log_model(run, model, example: np.ndarray, *, step: int,
              params: dict[str, Any] | None = None) -> str:
    """Log `model` (a trained `keras.Model`) as the run's MLflow Model; returns its model id.

    Args:
        run: the `zoo.tracking.TrackedRun`.
        model: the trained model (compiled or not: its optimizer is left out).
        example: raw inputs (at least one row) for the input example.
        step: the epoch the model comes from.
        params: shown on the model's page (the run's recipe, flattened).
    """
    from mlflow.entities import LoggedModelOutput

    model_id = save_logged_model(run.client, run.experiment_id, model, example,
                                 run_id=run.run_id, params=params).model_id
    run.client.log_outputs(run.run_id, [LoggedModelOutput(model_id, step=step)])
    return model_id


def save_logged_model(client, experiment_id: str, model, example: np.ndarray, *,
                      run_id: str | None = None, params: dict[str, Any] | None = None,
                      tags: dict[str, str] | None = None, name: str = MODEL_NAME):
    """Save `model` as an MLflow 3 logged model `name` of the experiment (of the run
    `run_id`, if given); returns the `LoggedModel`, READY (FAILED, and the error raised, if
    saving fails)."""
    import mlflow.keras
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    from zoo.models import inference_copy

    logged = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, model_type="keras", tags=tags,
        params={k: str(v)[:6000] for k, v in (params or {}).items()})
    try:
        description = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                            run_id=run_id, model_id=logged.model_id)
        with tempfile.TemporaryDirectory(prefix="zoo-mlflow-model-") as tmp:
            path = Path(tmp) / MODEL_NAME
            path.mkdir()
            mlflow.keras.save_model(
                inference_copy(model), str(path), mlflow_model=description,
                signature=signature(tuple(example.shape[1:]), int(model.output_shape[-1])),
                input_example=np.asarray(example[:EXAMPLE_ROWS], dtype=np.float32),
                pip_requirements=pip_requirements())
            client.log_model_artifacts(logged.model_id, str(path))
        return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise


def split_datasets(splits, source_name: str) -> dict[str, Any]:
    """The `training`, `validation` and `test` splits (those with examples) as MLflow datasets
    named `<data set>-train`, `-validation`, `-test`, each with a digest of its arrays.

    Args:
        splits: a `zoo.data.Splits`.
        source_name: where the data come from, e.g. `zoo.data:mnist1d`.
    """
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = CodeDatasetSource(tags={"mlflow.source.name": source_name})
    parts = {"training": ("train", splits.x_train, splits.y_train),
             "validation": ("validation", splits.x_val, splits.y_val),
             "test": ("test", splits.x_test, splits.y_test)}
    return {context: mlflow.data.from_numpy(x, source=source, targets=y,
                                            name=f"{splits.name}-{part}")
            for context, (part, x, y) in parts.items() if len(y)}


def log_splits(run, splits, source_name: str) -> dict[str, tuple[str, str]]:
    """The splits (`split_datasets`) as the run's inputs (the UI's Dataset column), so a
    changed split shows as another data set.

    Returns:
        Context (`training`, `validation`, `test`) -> (data set name, digest), for metrics that
        name the data set they were computed on.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    datasets = split_datasets(splits, source_name)
    inputs = [DatasetInput(dataset._to_mlflow_entity(),
                           tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
              for context, dataset in datasets.items()]
    for attempt in range(1, DATASET_ATTEMPTS + 1):
        try:
            run.client.log_inputs(run.run_id, datasets=inputs)
            break
        except MlflowException as err:
            if attempt == DATASET_ATTEMPTS or not _lost_insert_race(err):
                raise
    return {context: (d.name, d.digest) for context, d in datasets.items()}


# MLflow's SQL store logs a run's inputs by looking for each data set of the experiment and
# inserting those it did not find. Runs that start together on a new experiment (the workers of
# a grid or a search) all miss the same data sets; on PostgreSQL all but the first insert then
# fail on the data sets' unique key, and the whole call is rolled back. Tried again, the call
# finds the data sets the first one inserted.
DATASET_ATTEMPTS = 3


def _lost_insert_race(err: Exception) -> bool:
    """Whether `err` is a unique-key violation (PostgreSQL's or SQLite's wording), as a server
    reports it or the store raises it."""
    text = str(err)
    return "duplicate key value violates unique constraint" in text or (
        "UNIQUE constraint failed" in text)
