"""`train(recipe) -> Result`: data, model, fit, one test evaluation, atomic save, MLflow run."""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import interrupt, paths
from zoo.augment import augment_tensor
from zoo.data import Splits, load_dataset, make_dataset
from zoo.data.pipeline import training_dataset
from zoo.errors import TrainingError
from zoo.execution import Policy, seed_everything
from zoo.files import atomic_path
from zoo.recipe import Recipe
from zoo.schedules import LearningRateController, make_schedule


@dataclass
class Result:
    """What one training run produced."""

    recipe: Recipe
    test_loss: float
    test_accuracy: float
    model_path: Path
    weights_sha256: str
    epochs: int
    seconds: float
    run_id: str | None = None
    experiment_id: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the trained keras.Model
    fit_seconds: float = 0.0  # time inside model.fit alone
    execution: str = ""  # device, XLA, steps per call and op determinism, as trained

    def summary(self) -> dict[str, Any]:
        """The JSON object `zoo train --json` prints."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "recipe": self.recipe.name,
            "seed": self.recipe.seed,
            "fingerprint": self.recipe.fingerprint,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            "model_path": str(self.model_path),
            "weights_sha256": self.weights_sha256,
        }


@dataclass
class Prepared:
    """Everything `fit` needs, built from a recipe (shared by `train` and the benchmark)."""

    recipe: Recipe
    splits: Splits
    model: Any
    train_data: Any
    test_data: Any
    epochs: int
    steps_per_epoch: int
    policy: Policy | None = None

    def execution(self) -> str:
        """How this model trains, as compiled: `CPU, XLA on, 36 steps per call, ...`."""
        device = self.policy.device if self.policy else "?"
        determinism = "on" if self.policy and self.policy.op_determinism else "off"
        threads = self.policy.threads if self.policy else "?"
        return (f"{device}, XLA {'on' if self.model.jit_compile else 'off'}, "
                f"{self.model.steps_per_execution} steps per call, "
                f"TF op determinism {determinism}, intra-op threads {threads}")


def training_length(recipe: Recipe, train_examples: int) -> tuple[int, int]:
    """(epochs, batches per epoch); `training.steps`, when set, wins over `training.epochs`."""
    steps_per_epoch = math.ceil(train_examples / recipe.data.batch_size)
    steps = recipe.training.steps
    epochs = math.ceil(steps / steps_per_epoch) if steps else recipe.training.epochs
    return epochs, steps_per_epoch


def prepare(recipe: Recipe) -> Prepared:
    """Seed, load the data and build and compile the model. Raises ZooError on bad input."""
    from zoo.models import build_model
    from zoo.optim import make_optimizer

    splits = load_dataset(recipe.data.dataset, recipe.data.validation_split)
    # Seeded after loading: the first load of a data set in a process may draw from the global
    # generators (mnist1d seeds and draws NumPy's), later loads come from a cache and do not, so
    # seeding before would make the weights depend on what the process trained before.
    policy = seed_everything(recipe.seed)
    batch_size = recipe.data.batch_size
    epochs, steps_per_epoch = training_length(recipe, len(splits.y_train))
    model = build_model(
        recipe.model.name,
        recipe.model.args,
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        standardize=splits.standardization() if recipe.data.standardize else None,
        l1=recipe.regularization.l1,
        l2=recipe.regularization.l2,
        model_name=recipe.name,
    )
    schedule = make_schedule(recipe.optimizer, steps_per_epoch, epochs * steps_per_epoch)
    model.compile(
        optimizer=make_optimizer(recipe.optimizer, schedule),
        loss=_loss(recipe),
        metrics=[_accuracy()],
        # A whole epoch per call: small models spend more time in dispatch than in compute.
        steps_per_execution=steps_per_epoch,
        jit_compile=policy.jit_compile(epochs * steps_per_epoch),
    )
    n = splits.num_classes
    return Prepared(
        recipe=recipe,
        splits=splits,
        model=model,
        # Endless, read `steps_per_epoch` at a time, so Keras keeps one iterator for the whole
        # run and the prefetch prepares the next epoch while this one trains.
        train_data=training_dataset(splits.x_train, splits.y_train, n, batch_size,
                                    seed=recipe.seed, augment=_augmentation(recipe, splits)),
        test_data=make_dataset(splits.x_test, splits.y_test, n, batch_size),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        policy=policy,
    )


def _augmentation(recipe: Recipe, splits: Splits):
    ops = recipe.data.augmentation
    if not ops:
        return None
    mean, std = float(splits.x_train.mean()), float(splits.x_train.std())
    return lambda x, key: augment_tensor(x, ops, key, mean, std)


def train(recipe: Recipe, *, track: bool = True, verbose: int | str = "auto",
          callbacks: Sequence[Any] = (), model_dir: Path | None = None,
          run_name: str | None = None, parent_run_id: str | None = None,
          tags: dict[str, Any] | None = None) -> Result:
    """Train a recipe end to end.

    Args:
        recipe: a validated recipe (`zoo.recipe.load_recipe`).
        track: record an MLflow run (params, per-epoch metrics, tags, artifacts).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks (e.g. monitors).
        model_dir: where the `.keras` file goes; default `models/` in the project.
        run_name: MLflow run name (default: the recipe name).
        parent_run_id: nest the run under this MLflow run (tuning trials, ablation cells).
        tags: extra MLflow tags.

    Returns:
        The `Result`, with test metrics, the model path and a hash of the weights.

    Raises:
        ZooError: bad data or model configuration (before any run starts), or a NaN loss.
    """
    started = time.perf_counter()
    prepared = prepare(recipe)  # every user error surfaces here, before MLflow is touched
    model_path = _model_path(recipe, model_dir)
    if not track:
        return _fit_and_save(prepared, None, verbose, callbacks, model_path, started)
    from zoo import tracking

    all_tags = {
        "zoo.recipe": recipe.name,
        "zoo.recipe_path": _display_path(recipe.source),
        "zoo.fingerprint": recipe.fingerprint,
        "zoo.seed": recipe.seed,
        "zoo.execution": prepared.execution(),
        **tracking.environment_tags(),
        **(tags or {}),
    }
    with tracking.start_run(prepared.splits.name, run_name or recipe.name, all_tags,
                            parent_run_id=parent_run_id) as run:
        run.log_params(recipe.flat())
        return _fit_and_save(prepared, run, verbose, callbacks, model_path, started)


def _fit_and_save(prepared: Prepared, run, verbose, callbacks, model_path: Path,
                  started: float) -> Result:
    recipe, model = prepared.recipe, prepared.model
    all_callbacks = [
        # First: every later callback (early stopping, plateau, MLflow, History) sees val_*.
        *([ValidationMetrics(prepared)] if prepared.splits.has_validation else []),
        LearningRateController(recipe.optimizer, prepared.steps_per_epoch, prepared.epochs),
        _StopOnNaN(),
    ]
    if recipe.regularization.l1 > 0:
        all_callbacks.append(_NearZeroWeights())
    stopping = recipe.regularization.early_stopping
    if stopping is not None:
        all_callbacks.append(keras.callbacks.EarlyStopping(**stopping.model_dump()))
    if run is not None:
        all_callbacks.append(_MlflowEpochLogger(run))
    if recipe.diagnostics.monitor:
        from zoo.monitor import monitor_for

        # After early stopping: its end-of-run figures then show the weights that are saved.
        all_callbacks.append(monitor_for(prepared, run))
    all_callbacks.extend(callbacks)

    fit_started = time.perf_counter()
    with interrupt.stoppable(model):
        fit = model.fit(
            prepared.train_data,
            epochs=prepared.epochs,
            steps_per_epoch=prepared.steps_per_epoch,
            shuffle=False,  # the tf.data pipeline shuffles, with the recipe's seed
            callbacks=all_callbacks,
            verbose=verbose,
        )
    fit_seconds = time.perf_counter() - fit_started
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    losses = history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise TrainingError(
            f"{recipe.name}: the training loss became {losses[-1]} in epoch {len(losses)}; "
            f"lower optimizer.learning_rate (now {recipe.optimizer.learning_rate}), set "
            "optimizer.clipnorm, or raise regularization"
        )

    # The test split is evaluated once, after training, and never used to choose anything.
    test_loss, test_accuracy = model.evaluate(prepared.test_data, verbose=0)
    save_model_atomically(model, model_path)
    result = Result(
        recipe=recipe,
        test_loss=float(test_loss),
        test_accuracy=float(test_accuracy),
        model_path=model_path,
        weights_sha256=weights_sha256(model),
        epochs=len(losses),
        seconds=time.perf_counter() - started,
        history=history,
        model=model,
        fit_seconds=fit_seconds,
        execution=prepared.execution(),
    )
    if run is not None:
        result.run_id, result.experiment_id = run.run_id, run.experiment_id
        run.log_metrics({"test_loss": result.test_loss, "test_accuracy": result.test_accuracy,
                         "epochs_trained": result.epochs}, step=result.epochs)
        _log_artifacts(run, prepared, history, model_path)
    return result


def _log_artifacts(run, prepared: Prepared, history, model_path: Path) -> None:
    from zoo import plots

    recipe, splits = prepared.recipe, prepared.splits
    # Direct calls in batches: no predict() graph to trace for one pass over the test split.
    x_test = splits.x_test
    probabilities = np.concatenate([
        keras.ops.convert_to_numpy(prepared.model(x_test[i:i + 1024], training=False))
        for i in range(0, len(x_test), 1024)])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "recipe.yaml").write_text(recipe.to_yaml())
        plots.learning_curves(history, folder / "learning_curves.png", recipe.name)
        plots.confusion_matrix(splits.y_test, probabilities.argmax(axis=1), splits.class_names,
                               folder / "confusion_matrix.png", recipe.name)
        for name in ("recipe.yaml", "learning_curves.png", "confusion_matrix.png"):
            run.log_artifact(folder / name)
    run.log_artifact(model_path, "model")


def save_model_atomically(model, path: Path) -> None:
    """Never a half-written model: Keras writes a temporary file that is then renamed."""
    with atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)


def weights_sha256(model) -> str:
    """sha256 over every weight's path, shape and values: equal iff the trained weights are."""
    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{values.dtype}:{values.shape};".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def _model_path(recipe: Recipe, model_dir: Path | None) -> Path:
    # Same configuration and seed give the same weights, so the path is keyed by exactly those.
    folder = re.sub(r"[^\w./-]", "_", recipe.name).strip("./") or "recipe"
    return (model_dir or paths.models_dir()) / folder / (
        f"seed{recipe.seed}-{recipe.fingerprint[:12]}.keras")


def _display_path(source: Path | None) -> str:
    if source is None:
        return ""
    try:
        return str(source.resolve().relative_to(paths.project_root()))
    except ValueError:
        return str(source)


def _loss(recipe: Recipe):
    if recipe.training.loss == "mse":
        return keras.losses.MeanSquaredError(name="loss")
    return keras.losses.CategoricalCrossentropy(
        label_smoothing=recipe.regularization.label_smoothing, name="loss")


def _accuracy():
    return keras.metrics.CategoricalAccuracy(name="accuracy")


class ValidationMetrics(keras.callbacks.Callback):
    """`val_loss` and `val_accuracy` after each epoch, from one compiled pass over the
    validation split held as tensors.

    What Keras' `fit(validation_data=...)` computes (the compiled loss plus the regularization
    penalties, and the accuracy, in inference mode), without its per-epoch `evaluate` call,
    which costs small models more than the epoch's training (mnist1d/cnn_paper: 2.5 to 10 s of
    a 10 s run). A test holds the two to the same figures.
    """

    CHUNK = 1024  # examples per forward pass, so a large validation split fits in memory

    def __init__(self, prepared: Prepared):
        super().__init__()
        splits = prepared.splits
        self.x = splits.x_val
        self.y = np.eye(splits.num_classes, dtype=np.float32)[splits.y_val]
        self.jit_compile = bool(prepared.model.jit_compile)
        self._evaluate = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model, n = self.model, len(self.y)
        x, y = tf.constant(self.x), tf.constant(self.y)

        def evaluate():
            loss_sum, correct = 0.0, 0.0
            for start in range(0, n, self.CHUNK):  # unrolled when traced: n is fixed
                xs, ys = x[start:start + self.CHUNK], y[start:start + self.CHUNK]
                predicted = model(xs, training=False)
                count = tf.cast(tf.shape(xs)[0], tf.float32)
                loss_sum += model.loss(ys, predicted) * count
                correct += tf.reduce_sum(tf.cast(
                    tf.argmax(predicted, -1) == tf.argmax(ys, -1), tf.float32))
            penalty = tf.add_n(model.losses) if model.losses else 0.0
            return loss_sum / n + penalty, correct / n

        self._evaluate = tf.function(evaluate, jit_compile=self.jit_compile, autograph=False)

    def on_epoch_end(self, epoch, logs=None):
        loss, accuracy = self._evaluate()
        if logs is not None:
            logs["val_loss"] = float(loss)
            logs["val_accuracy"] = float(accuracy)


class _StopOnNaN(keras.callbacks.Callback):
    """Stops training after an epoch whose loss is not finite.

    Checked per epoch, not per batch as keras.callbacks.TerminateOnNaN does: any batch-end hook
    makes Keras wait for each batch's logs, which costs small models several percent.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.model.stop_training = True


class _NearZeroWeights(keras.callbacks.Callback):
    """Logs the fraction of kernel weights below 1e-3 in magnitude: what L1 drives to zero."""

    THRESHOLD = 1e-3

    def on_epoch_end(self, epoch, logs=None):
        kernels = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights
                   if w.path.endswith("kernel")]
        total = sum(k.size for k in kernels)
        small = sum(int((np.abs(k) < self.THRESHOLD).sum()) for k in kernels)
        if logs is not None and total:
            logs["near_zero_weights"] = small / total


class _MlflowEpochLogger(keras.callbacks.Callback):
    """Sends each epoch's logs to MLflow (step = epoch number, from 1)."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self.run.log_epoch(logs, step=epoch + 1)
