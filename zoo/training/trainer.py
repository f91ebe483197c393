"""`train(recipe) -> Result`: data, model, fit, one test evaluation, atomic save, MLflow run."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import interrupt, paths
from zoo import mlflow_layout as layout
from zoo.data import Splits, recipe_splits
from zoo.data.augment import augment_tensor
from zoo.data.pipeline import training_dataset
from zoo.errors import TrainingError
from zoo.files import Busy, exclusive
from zoo.logged_models import log_model, log_splits, split_datasets
from zoo.recipe import Recipe, training_length
from zoo.training.backup import BackupAndResume, BackupStore, Snapshot, backup_folder
from zoo.training.execution import (
    XLA_MAX_DENSE_KERNEL,
    Policy,
    precision_and_devices,
    seed_everything,
)
from zoo.training.model_files import save_model_atomically, weights_sha256
from zoo.training.schedules import LearningRateController, make_schedule


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
    model_id: str | None = None  # the run's MLflow Model (runs:/<run_id>/model)
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
    """Everything `fit` needs, built from a recipe (shared by `train`, the tuner and lr-find)."""

    recipe: Recipe
    splits: Splits
    model: Any
    train_data: Any
    epochs: int
    steps_per_epoch: int
    policy: Policy | None = None
    replicas: int = 1  # devices a mirrored strategy splits each batch over

    def execution(self) -> str:
        """How this model trains, as compiled: `CPU, XLA on, 36 steps per call, ...`."""
        device = self.policy.device if self.policy else "?"
        determinism = "on" if self.policy and self.policy.op_determinism else "off"
        threads = self.policy.threads if self.policy else "?"
        inter_op = self.policy.inter_op_threads if self.policy else "?"
        return (f"{device}, XLA {'on' if self.model.jit_compile else 'off'}, "
                f"{self.model.steps_per_execution} steps per call, "
                f"TF op determinism {determinism}, intra-op threads {threads}, "
                f"inter-op threads {inter_op}, "
                f"precision {self.recipe.training.precision}"
                + (f", mirrored over {self.replicas} devices"
                   if self.recipe.training.distribute == "mirrored" else ""))


def prepare(recipe: Recipe) -> Prepared:
    """Seed, load the data and build and compile the model. Raises ZooError on bad input."""
    from zoo.models import model_for
    from zoo.training.optim import make_optimizer

    splits = recipe_splits(recipe)
    # Seeded after loading: the first load of a data set in a process may draw from the global
    # generators (mnist1d seeds and draws NumPy's), later loads come from a cache and do not, so
    # seeding before would make the weights depend on what the process trained before.
    policy = seed_everything(recipe.seed)
    epochs, steps_per_epoch = training_length(recipe, len(splits.y_train))
    training = recipe.training
    with precision_and_devices(training.precision, training.distribute) as strategy:
        model = model_for(recipe, splits)
        schedule = make_schedule(recipe.optimizer, steps_per_epoch, epochs * steps_per_epoch)
        model.compile(
            optimizer=make_optimizer(recipe.optimizer, schedule),
            loss=_loss(recipe),
            metrics=[_accuracy()],
            # A whole epoch per call: small models spend more time in dispatch than in compute.
            # Under a MirroredStrategy, Keras' loop over several steps fails in TensorFlow 2.21
            # ("You must feed a value for placeholder tensor"), so each step is one call there.
            steps_per_execution=steps_per_epoch if strategy is None else 1,
            jit_compile=policy.jit_compile(epochs * steps_per_epoch, _large_kernels(model)),
        )
    return Prepared(
        recipe=recipe,
        splits=splits,
        model=model,
        train_data=_training_data(recipe, splits),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        policy=policy,
        replicas=strategy.num_replicas_in_sync if strategy is not None else 1,
    )


# The last training pipeline built, by everything that decides its stream: building one traces
# its tf.data functions (0.2 s), a third of a short tuning trial's overhead, and trials and grid
# cells often share it. A tf.data pipeline is a description: each `fit` iterates it afresh, from
# the start of the same stream. One only: it holds the training split as tensors.
_LAST_PIPELINE: dict[tuple, Any] = {}


def _training_data(recipe: Recipe, splits: Splits, start_epoch: int = 0):
    """The training batches of `prepare`: endless, read `steps_per_epoch` at a time, so Keras
    keeps one iterator for the whole run and the prefetch prepares the next epoch while this
    one trains; a resumed run's stream starts at `start_epoch`."""
    data = recipe.data
    key = (data.dataset, data.validation_split, data.batch_size, recipe.seed,
           tuple(data.augmentation), len(splits.y_train), start_epoch, data.shuffle)
    if key not in _LAST_PIPELINE:
        _LAST_PIPELINE.clear()
        _LAST_PIPELINE[key] = training_dataset(
            splits.x_train, splits.y_train, splits.num_classes, data.batch_size,
            seed=recipe.seed, augment=_augmentation(recipe, splits), start_epoch=start_epoch,
            shuffle=data.shuffle)
    return _LAST_PIPELINE[key]


def _large_kernels(model) -> bool:
    """2D convolutions or a large dense kernel: what oneDNN computes faster than XLA on a CPU."""
    return any(isinstance(layer, keras.layers.Conv2D) or (
        isinstance(layer, keras.layers.Dense)
        and math.prod(layer.kernel.shape) >= XLA_MAX_DENSE_KERNEL)
        for layer in model.layers)


def _augmentation(recipe: Recipe, splits: Splits):
    ops = recipe.data.augmentation
    if not ops:
        return None
    mean, std = float(splits.x_train.mean()), float(splits.x_train.std())
    return lambda x, key: augment_tensor(x, ops, key, mean, std)


def train(recipe: Recipe, *, track: bool = True, verbose: int | str = "auto",
          callbacks: Sequence[Any] = (), model_dir: Path | None = None,
          run_name: str | None = None, parent_run_id: str | None = None,
          tags: dict[str, Any] | None = None, plots: bool = True,
          backup: bool = True, system_metrics: bool | None = None,
          mlflow_model: bool = True) -> Result:
    """Train a recipe end to end; backed up each epoch, resumed from its backup if it has one.

    Args:
        recipe: a validated recipe (`zoo.recipe.load_recipe`).
        track: record an MLflow run (params, per-epoch metrics, tags, artifacts).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        callbacks: extra Keras callbacks (e.g. monitors).
        model_dir: where the `.keras` file goes; default `models/` in the project.
        run_name: MLflow run name (default: the recipe name).
        parent_run_id: nest the run under this MLflow run (tuning trials, ablation cells).
        tags: extra MLflow tags.
        plots: log learning curves and a confusion matrix as PNGs (tuning trials leave them
            out: a third of a short trial's cost, and the tune's parent compares the trials).
        backup: back the run up after every epoch (`zoo.training.backup`) and resume from the
            backup a killed run of the same configuration and seed left, into its MLflow run.
        mlflow_model: log the model as the run's MLflow Model (`zoo.logged_models`; tuning
            trials leave it out).
        system_metrics: log CPU, memory, disk and network use (and GPU where there is one) as
            `system/*` metrics while training; None follows MLflow's own switch, the
            environment variable MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.

    Returns:
        The `Result`, with test metrics, the model path and a hash of the weights.

    Raises:
        ZooError: bad data or model configuration (before any run starts), or a NaN loss.
    """
    started = time.perf_counter()
    prepared = prepare(recipe)  # every user error surfaces here, before MLflow is touched
    model_path = model_path_for(recipe, model_dir)
    # One process at a time trains into a model path: a second would resume from the first's
    # backups into its MLflow run while the first still writes them.
    with _training_alone(recipe, model_path):
        store = BackupStore(backup_folder(model_path)) if backup else None
        resume = _resume_point(prepared, store) if store is not None else None
        if not track:
            return _fit_and_save(prepared, None, verbose, callbacks, model_path, started, plots,
                                 store, resume, mlflow_model)
        from zoo import tracking

        all_tags = {
            layout.RECIPE: recipe.name,
            layout.RECIPE_PATH: _display_path(recipe.source),
            layout.SOURCE_NAME: _display_path(recipe.source) or recipe.name,
            layout.DESCRIPTION: _description(prepared),
            layout.FINGERPRINT: recipe.fingerprint,
            layout.SEED: recipe.seed,
            layout.RUNTIME: prepared.execution(),
            **tracking.environment_tags(),
            **(tags or {}),
        }
        experiment = layout.experiment_for(prepared.splits.name)
        resume_run_id = _resumable_run(resume)
        with tracking.start_run(experiment, run_name or recipe.name, all_tags,
                                parent_run_id=parent_run_id, resume_run_id=resume_run_id) as run:
            if resume_run_id is None:
                run.log_params(recipe.flat())
                run.datasets = log_splits(run, prepared.splits, _data_source(prepared.splits))
            else:
                run.continue_after_kill()
                _log_backed_up_epochs(run, resume)
            with _system_metrics(run, system_metrics, resumed=resume_run_id is not None):
                return _fit_and_save(prepared, run, verbose, callbacks, model_path, started, plots,
                                     store, resume, mlflow_model)


@contextlib.contextmanager
def _training_alone(recipe: Recipe, model_path: Path):
    """Hold the lock of `model_path` (a hidden file beside it) while training; raise a
    TrainingError naming the process that holds it."""
    lock = model_path.with_name(f".{model_path.stem}.lock")
    try:
        with exclusive(lock, wait=False, owner=f"pid {os.getpid()} on {socket.gethostname()}"):
            yield
    except Busy as busy:
        raise TrainingError(
            f"{recipe.name} seed {recipe.seed} is being trained into {model_path} by another "
            f"process ({busy.owner}); wait for it to end, or train another seed (seed=N) "
            "or in another project folder (ZOO_HOME)") from None


@contextlib.contextmanager
def _system_metrics(run, wanted: bool | None, resumed: bool):
    """MLflow's system metrics monitor (a thread sampling the machine) around the training."""
    if wanted is None:
        from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

        wanted = bool(MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get())
    if not wanted:
        yield
        return
    from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from zoo import tracking

    # Every 2 s unless MLflow's variable says otherwise: its default of 10 s leaves a short
    # run with a point or two.
    monitor = SystemMetricsMonitor(
        run.run_id, sampling_interval=MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or 2,
        resume_logging=resumed, tracking_uri=tracking.tracking_uri())
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _resume_point(prepared: Prepared, store: BackupStore) -> Snapshot | None:
    """The backup to resume from, if the folder has a usable one; says which, or why none."""
    if not store.exists():
        return None
    # The optimizer's variables exist once it is built; `fit` would build it the same way.
    prepared.model.optimizer.build(prepared.model.trainable_variables)
    snapshot, notes = store.latest(prepared.model)
    for note in notes:
        print(f"zoo: {note}", flush=True)
    recipe = prepared.recipe
    if snapshot is None:
        print(f"zoo: {recipe.name} seed {recipe.seed}: no usable backup in {store.folder}; "
              "training from the start", flush=True)
        store.remove()
        return None
    print(f"zoo: {recipe.name} seed {recipe.seed}: resuming after epoch {snapshot.epoch} of "
          f"{prepared.epochs} from {store.folder}", flush=True)
    prepared.train_data = _training_data(recipe, prepared.splits, start_epoch=snapshot.epoch)
    return snapshot


def _log_backed_up_epochs(run, resume: Snapshot) -> None:
    """The epochs a killed process trained and backed up but had not sent to MLflow yet
    (epoch metrics go in batches every few seconds), from the backup's history."""
    history = resume.state.get("history", {})
    for epoch in range(1, resume.epoch + 1):
        run.log_epoch({key: values[epoch - 1] for key, values in history.items()
                       if len(values) >= epoch}, step=epoch)


def _resumable_run(resume: Snapshot | None) -> str | None:
    """The MLflow run a resumed training continues: the backup's, if the store still has it
    and it has not finished; None starts a new run."""
    if resume is None or not resume.state.get("run_id"):
        return None
    from zoo import tracking

    run = tracking.find_run(tracking.client(), resume.state["run_id"])
    if run is None or run.info.status == "FINISHED" or run.info.lifecycle_stage != "active":
        print(f"zoo: the backup's MLflow run {resume.state['run_id']} is not in this store "
              "(or has finished); the resumed training is recorded in a new run", flush=True)
        return None
    return run.info.run_id


def _fit_and_save(prepared: Prepared, run, verbose, callbacks, model_path: Path,
                  started: float, plots: bool, store: BackupStore | None = None,
                  resume: Snapshot | None = None, mlflow_model: bool = True) -> Result:
    recipe, model = prepared.recipe, prepared.model
    rates = LearningRateController(recipe.optimizer, prepared.steps_per_epoch, prepared.epochs)
    validation = ValidationMetrics(prepared) if prepared.splits.has_validation else None
    all_callbacks = [
        # First: every later callback (early stopping, plateau, MLflow, History) sees val_*.
        *([validation] if validation is not None else []),
        rates,
        _StopOnNaN(),
    ]
    if recipe.regularization.l1 > 0:
        all_callbacks.append(_NearZeroWeights())
    stopping = recipe.regularization.early_stopping
    early_stopping = None
    if stopping is not None:
        early_stopping = keras.callbacks.EarlyStopping(**stopping.model_dump())
        all_callbacks.append(early_stopping)
    backup = None
    if store is not None:
        # After the callbacks whose state it keeps, and those that add to an epoch's logs.
        backup = BackupAndResume(store, resume, run_id=run.run_id if run else None,
                                 early_stopping=early_stopping, rate_controller=rates)
        all_callbacks.append(backup)
    if run is not None:
        all_callbacks.append(_MlflowEpochLogger(run))
    monitor = None
    if recipe.monitor.enabled:
        from zoo.training.monitor import monitor_for

        # After early stopping: its end-of-run figures then show the weights that are saved.
        monitor = monitor_for(prepared, run)
        all_callbacks.append(monitor)
    all_callbacks.extend(callbacks)

    # The test split is evaluated after training (and once while training, for its trace: a
    # result dropped), and never used to choose anything.
    splits = prepared.splits
    evaluate_test = compiled_evaluation(model, splits.x_test, splits.y_test, splits.num_classes)
    logging_to_come = run is not None and (plots or mlflow_model)
    warm_up = _WarmUpAfterFirstEpoch(functools.partial(
        _warm_up_end_of_run, evaluate_test, logging=logging_to_come))
    all_callbacks.append(warm_up)
    fit_started = time.perf_counter()
    try:
        with interrupt.stoppable(model):
            fit = model.fit(
                prepared.train_data,
                epochs=prepared.epochs,
                initial_epoch=resume.epoch if resume else 0,
                steps_per_epoch=prepared.steps_per_epoch,
                shuffle=False,  # the tf.data pipeline shuffles, with the recipe's seed
                callbacks=all_callbacks,
                verbose=verbose,
            )
    finally:
        warm_up.finish()
        if validation is not None:
            validation.finish()
        if monitor is not None:
            monitor.finish()
        if backup is not None:
            backup.finish()  # the last backup written whole, whatever happened
    fit_seconds = time.perf_counter() - fit_started
    # A resumed run's history begins with the epochs before its backup.
    history = (backup.history if backup is not None else
               {k: [float(v) for v in values] for k, values in fit.history.items()})
    losses = history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise TrainingError(
            f"{recipe.name}: the training loss became {losses[-1]} in epoch {len(losses)}; "
            f"lower optimizer.learning_rate (now {recipe.optimizer.learning_rate}), set "
            "optimizer.clipnorm, or raise regularization"
        )

    test_loss, test_accuracy, predicted = evaluate_test()
    predicted = keras.ops.convert_to_numpy(predicted)
    if run is not None and plots:
        # Drawn in a child process while this one saves and logs the model.
        run.log_artifacts_later(_figures_aside(prepared, history, predicted))
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
        if mlflow_model:
            result.model_id = log_model(run, model, splits.x_test, step=result.epochs,
                                        params=recipe.flat())
        run.log_metrics({"test_loss": result.test_loss, "test_accuracy": result.test_accuracy},
                        step=result.epochs, model_id=result.model_id,
                        dataset=_test_split(run, splits))
        run.log_metrics({"epochs_trained": result.epochs}, step=result.epochs)
        _log_recipe(run, recipe)
    if store is not None:
        store.remove()  # a clean finish: nothing to resume
    return result


def _description(prepared: Prepared) -> str:
    """The run's description in the MLflow UI: what was trained, on what, and how to redo it."""
    recipe = prepared.recipe
    source = _display_path(recipe.source) or recipe.name
    return (f"**{recipe.name}**, seed {recipe.seed}: model `{recipe.model.name}` on "
            f"`{recipe.data.dataset}`, {prepared.epochs} epochs of {prepared.steps_per_epoch} "
            f"steps, optimizer `{recipe.optimizer.name}` at {recipe.optimizer.learning_rate:g} "
            f"({recipe.optimizer.schedule} schedule). The resolved recipe is the artifact "
            f"`recipe.yaml`; the model is `runs:/<this run>/model`. Retrain it with "
            f"`zoo train {source} seed={recipe.seed}` (fingerprint `{recipe.fingerprint[:12]}`).")


def _data_source(splits: Splits) -> str:
    return f"zoo.data:{splits.name}"


def _test_split(run, splits: Splits) -> tuple[str, str] | None:
    """(name, digest) of the test split, as logged among the run's inputs."""
    if "test" in run.datasets:
        return run.datasets["test"]
    # A resumed run: the first process logged its inputs.
    test = split_datasets(splits, _data_source(splits)).get("test")
    return (test.name, test.digest) if test is not None else None


def _log_recipe(run, recipe: Recipe) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(recipe.to_yaml())
        run.log_artifact(path)


def _figures_aside(prepared: Prepared, history, predicted: np.ndarray):
    """The learning curves and the confusion matrix, drawn in a forked child
    (`zoo.plots.FiguresAside`) while the model is saved and logged."""
    from zoo import plots

    recipe, splits = prepared.recipe, prepared.splits
    folder = Path(tempfile.mkdtemp(prefix="zoo-figures-"))
    return plots.FiguresAside({
        folder / "learning_curves.png": lambda path: plots.learning_curves(
            history, path, recipe.name),
        folder / "confusion_matrix.png": lambda path: plots.confusion_matrix(
            splits.y_test, predicted, splits.class_names, path, recipe.name),
    }, folder=folder)


def _warm_up_end_of_run(evaluate_test, logging: bool) -> None:
    """What the end of a run would otherwise spend its first tenths of a second on, done while
    the model trains: the test evaluation traced and run once (its result, on the weights of
    the moment, dropped: the first call of a compiled function traces it and has TensorFlow
    prepare its graph, 0.07 to 0.09 s for mnist1d/cnn_paper, where a later call takes 3 ms), and
    for a tracked run `warm_up_logging`."""
    evaluate_test()
    if logging:
        warm_up_logging()


def warm_up_logging() -> None:
    """What the end of a tracked run imports and checks first (matplotlib, MLflow's model
    format and its check of the pinned requirements against this environment, which scans
    every installed package once per process: a few tenths of a second of Python), done on a
    thread of its own while the model trains (`_WarmUpAfterFirstEpoch`)."""
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    from zoo import plots
    from zoo.logged_models import pip_requirements

    plots.pyplot()
    import mlflow.keras  # noqa: F401
    import mlflow.pyfunc  # noqa: F401  (loaded lazily by save_model: 0.1 s of imports)

    warn_dependency_requirement_mismatches(pip_requirements())  # its package scan is cached


def model_path_for(recipe: Recipe, model_dir: Path | None = None) -> Path:
    """Where `train` saves the model of `recipe` (under `model_dir`, default `models/`)."""
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


def compiled_evaluation(model, x: np.ndarray, labels: np.ndarray, num_classes: int,
                        split_in: int = 1):
    """A compiled pass over (x, integer labels) held as tensors, in inference mode.

    Args:
        split_in: forward passes over equal shares of x, at least (more when a share would
            exceed 1024 examples, so that a large split fits in memory). Independent passes,
            which TensorFlow runs side by side on its inter-op threads.

    Returns:
        A function of no arguments returning (loss, accuracy, predicted classes): the loss as
        Keras' `evaluate` computes it (the compiled loss plus the regularization penalties),
        without its per-call machinery, which costs small models more than the pass itself.
    """
    import tensorflow as tf

    n = len(labels)
    inputs = tf.constant(x)
    targets = tf.one_hot(tf.constant(labels), num_classes)  # every loss takes one-hot targets
    chunk = min(1024, -(-n // split_in))  # examples per forward pass

    def evaluate():
        loss_sum, predicted = 0.0, []
        for start in range(0, n, chunk):  # unrolled when traced: n is fixed
            xs, ys = inputs[start:start + chunk], targets[start:start + chunk]
            probabilities = model(xs, training=False)
            loss_sum += model.loss(ys, probabilities) * tf.cast(tf.shape(xs)[0], tf.float32)
            predicted.append(tf.argmax(probabilities, -1))
        classes = tf.concat(predicted, 0)
        accuracy = tf.reduce_mean(tf.cast(classes == tf.argmax(targets, -1), tf.float32))
        penalty = tf.add_n(model.losses) if model.losses else 0.0
        return loss_sum / n + penalty, accuracy, classes

    return tf.function(evaluate, autograph=False)


class ValidationMetrics(keras.callbacks.Callback):
    """`val_loss` and `val_accuracy` after each epoch, from one compiled pass over the
    validation split held as tensors (`compiled_evaluation`).

    What Keras' `fit(validation_data=...)` computes, without its per-epoch `evaluate` call,
    which costs small models more than the epoch's training (mnist1d/cnn_paper: 2.5 to 10 s of
    a 10 s run). A test holds the two to the same figures.

    The pass is traced and run once (its result dropped) while the first epoch compiles: done
    when that epoch ends, its trace and TensorFlow's first run of the graph held training up by
    0.12 s (mnist1d/cnn_paper).
    """

    def __init__(self, prepared: Prepared):
        super().__init__()
        self.splits = prepared.splits
        self._evaluate = None
        self._first_epoch_ended = threading.Event()
        self._warm_up = None  # the thread that traces the pass, until the first epoch ends

    def on_train_begin(self, logs=None):
        from zoo import plots
        from zoo.training.overlap import wait_for_compiled_code

        # Without XLA even when training uses it: compiling the pass costs more (0.3 s for
        # mnist1d/cnn_paper) than it saves over a run's few hundred small validation passes.
        # In two halves: 1.5 to 1.8 ms a pass in a run of mnist1d/cnn_paper against 1.75 to 2.05
        # ms whole (400 examples), where the second core would otherwise wait.
        self._evaluate = compiled_evaluation(self.model, self.splits.x_val, self.splits.y_val,
                                             self.splits.num_classes, split_in=2)
        training_thread = threading.get_ident()

        def warm_up():
            wait_for_compiled_code(training_thread, self._first_epoch_ended)
            self._evaluate()

        self._first_epoch_ended.clear()
        self._warm_up = plots.warm_up_aside(warm_up)

    def on_epoch_end(self, epoch, logs=None):
        self.finish()
        loss, accuracy, _ = self._evaluate()
        if logs is not None:
            logs["val_loss"] = float(loss)
            logs["val_accuracy"] = float(accuracy)

    def on_train_end(self, logs=None):
        self.finish()  # a run stopped before its first epoch ended

    def finish(self) -> None:
        """Wait for the trace, if it still runs: an error in `fit` skips `on_train_end`, and
        TensorFlow aborts the process if it exits while a thread is still inside it."""
        if self._warm_up is not None:
            self._first_epoch_ended.set()
            self._warm_up.join()
            self._warm_up = None


class _WarmUpAfterFirstEpoch(keras.callbacks.Callback):
    """Runs `work` on a thread of its own (`zoo.plots.warm_up_aside`) once the first epoch has
    ended, while the later ones train; `finish()` waits for it.

    Not sooner: XLA compiles the first epoch's step on more than one core (2.2 s of CPU time in
    1.6 s for mnist1d/cnn_paper_plain on 2 cores), and the work (a few tenths of a second of
    Python) slowed that epoch by 0.1 to 0.3 s; a compiled epoch keeps one core busy and leaves
    the other to it.
    """

    def __init__(self, work):
        super().__init__()
        self.work = work
        self._thread = None  # the work's, once started

    def on_epoch_end(self, epoch, logs=None):
        if self._thread is None:
            from zoo import plots

            self._thread = plots.warm_up_aside(self.work)

    def finish(self) -> None:
        """Wait for the work, if it started: it calls into TensorFlow, which aborts the process
        if it exits (after Ctrl-C, say) while a thread is still inside it."""
        if self._thread is not None:
            self._thread.join()


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
