"""Benchmarks reported as ratios against a baseline measured in the same process and run.

Timings on shared machines are noisy, so each side runs `repeats` times, interleaved, and the
fastest run of each side is compared; nothing here asserts a time.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from zoo.recipe import Recipe, load_recipe

TRAINING_OVERHEAD_TARGET = 1.10
MONITOR_OVERHEAD_TARGET = 1.10  # monitoring every epoch against no monitoring
BARE_ARRAYS = "bare fit (numpy arrays)"
BARE_TF_DATA = "bare fit (zoo's tf.data)"
ZOO = "zoo train + mlflow"


def run_training_bench(recipe_name: str, overrides: list[str], repeats: int = 2) -> float:
    """Time `zoo.train` (MLflow tracking on) against a bare `model.fit` of the same model and data.

    Returns:
        The ratio of the fastest zoo run to the fastest bare run.
    """
    recipe = load_recipe(recipe_name, overrides)
    print(f"zoo bench: {recipe.name}; {repeats} timed runs of each side, "
          "interleaved, after one warm-up run each", flush=True)
    with tempfile.TemporaryDirectory() as tmp, _private_store(Path(tmp)):
        model_dir = Path(tmp) / "models"
        sides: dict[str, Callable[[Recipe], float]] = {
            BARE_ARRAYS: lambda r: _time_bare_fit(r, tf_data=False),
            BARE_TF_DATA: lambda r: _time_bare_fit(r, tf_data=True),
            ZOO: lambda r: _time_zoo_train(r, model_dir),
        }
        warm_up = recipe.with_overrides({"training.steps": None, "training.epochs": 1})
        for run in sides.values():  # one-time costs: graph tracing, MLflow schema creation
            run(warm_up)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(repeats):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                keras.backend.clear_session()  # both sides start from the same clean state
                seconds = sides[name](recipe)
                times[name].append(seconds)
                print(f"  run {i + 1}/{repeats}  {name:<26} {seconds:7.2f} s", flush=True)
    for name, values in times.items():
        print(f"{name:<26} fastest {min(values):7.2f} s   median "
              f"{statistics.median(values):7.2f} s")
    # The stricter comparison: against whichever bare variant was faster.
    bare = min(min(times[BARE_ARRAYS]), min(times[BARE_TF_DATA]))
    ratio = min(times[ZOO]) / bare
    verdict = "met" if ratio <= TRAINING_OVERHEAD_TARGET else "NOT met"
    print(f"ratio zoo/bare (fastest bare) {ratio:.3f}   "
          f"(target <= {TRAINING_OVERHEAD_TARGET:.2f}: {verdict})")
    return ratio


def run_monitor_bench(recipe_name: str, overrides: list[str], repeats: int = 2) -> float:
    """Time `zoo.train` with the training monitor on every epoch against the same run without.

    Both sides track to MLflow and train the same weights; they run interleaved, fastest of
    `repeats` compared.

    Returns:
        The ratio of the fastest monitored run to the fastest unmonitored one.
    """
    recipe = load_recipe(recipe_name, overrides)
    print(f"\nzoo bench: monitoring overhead on {recipe.name} (diagnostics.monitor=true, "
          f"every=1); {repeats} timed runs of each side, interleaved", flush=True)
    sides = {
        "zoo train": recipe.with_overrides({"diagnostics.monitor": False}),
        "zoo train + monitor": recipe.with_overrides({"diagnostics.monitor": True,
                                                      "diagnostics.every": 1}),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    inside: list[float] = []  # seconds spent in the monitor's own hooks, per monitored run
    with tempfile.TemporaryDirectory() as tmp, _private_store(Path(tmp)):
        model_dir = Path(tmp) / "models"
        for side in sides.values():  # warm-up: graph tracing, MLflow schema creation
            _time_zoo_train(side.with_overrides({"training.steps": None, "training.epochs": 1}),
                            model_dir)
        for i in range(repeats):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                keras.backend.clear_session()
                seconds, monitor_seconds = _time_monitored_train(sides[name], model_dir)
                times[name].append(seconds)
                if monitor_seconds is not None:
                    inside.append(monitor_seconds)
                print(f"  run {i + 1}/{repeats}  {name:<26} {seconds:7.2f} s", flush=True)
    for name, values in times.items():
        print(f"{name:<26} fastest {min(values):7.2f} s   median "
              f"{statistics.median(values):7.2f} s")
    fastest = min(times["zoo train"])
    ratio = min(times["zoo train + monitor"]) / fastest
    verdict = "met" if ratio <= MONITOR_OVERHEAD_TARGET else "NOT met"
    print(f"ratio monitored/unmonitored {ratio:.3f}   "
          f"(target <= {MONITOR_OVERHEAD_TARGET:.2f}: {verdict})")
    # Wall-clock ratios swing with the machine's load; the time inside the monitor's hooks
    # does not, and it is most of what monitoring adds (MLflow writes of its metrics aside).
    spent = statistics.median(inside)
    print(f"time in the monitor's hooks: median {spent:.2f} s per run, "
          f"{spent / fastest:.1%} of the fastest unmonitored run")
    return ratio


def _time_monitored_train(recipe: Recipe, model_dir: Path) -> tuple[float, float | None]:
    """Seconds of `zoo.train`, and of the monitor's hooks within it (None when off)."""
    from zoo import tracking
    from zoo.train import train

    started = time.perf_counter()
    result = train(recipe, verbose=0, model_dir=model_dir)
    seconds = time.perf_counter() - started
    if not recipe.diagnostics.monitor:
        return seconds, None
    metrics = tracking.client().get_run(result.run_id).data.metrics
    return seconds, metrics["monitor/seconds"]


def run_tuning_bench(recipe_name: str = "mnist1d/mlp", trials: int = 5) -> dict[str, float]:
    """Per-trial tuning overhead: everything a trial costs besides `model.fit` itself (data,
    build, compile, evaluation, saving, MLflow child run) plus Keras Tuner's own bookkeeping.

    Returns:
        Mean seconds per trial of fit, of trial overhead and of oracle overhead.
    """
    from zoo.tune import tune

    recipe = load_recipe(recipe_name, ["training.epochs=2", f"tune.max_trials={trials}",
                                       "tune.algorithm=random"])
    print(f"\nzoo bench: tuning {recipe.name}, {trials} trials of 2 epochs", flush=True)
    with tempfile.TemporaryDirectory() as tmp, _private_store(Path(tmp)):
        source = Path(tmp) / "recipe.yaml"
        source.write_text(recipe.to_yaml())
        recipe = load_recipe(source)
        started = time.perf_counter()
        result = tune(recipe, directory=Path(tmp) / "tuning")
        total = time.perf_counter() - started
    fit = statistics.fmean(t["fit_seconds"] for t in result.trials)
    trial = statistics.fmean(t["seconds"] for t in result.trials)
    figures = {"fit": fit, "trial_overhead": trial - fit,
               "oracle_overhead": total / len(result.trials) - trial}
    print(f"per trial: fit {fit:.2f} s, trial overhead (data, build, compile, evaluate, save, "
          f"MLflow) {trial - fit:.2f} s, search overhead (Keras Tuner, parent run) "
          f"{figures['oracle_overhead']:.2f} s")
    return figures


def _time_zoo_train(recipe: Recipe, model_dir: Path) -> float:
    from zoo.train import train

    started = time.perf_counter()
    train(recipe, verbose=0, model_dir=model_dir)
    return time.perf_counter() - started


def _time_bare_fit(recipe: Recipe, tf_data: bool) -> float:
    """The same model, optimizer and data through plain Keras: build, compile, fit, evaluate.

    Args:
        tf_data: feed the zoo's tf.data pipelines (isolates the cost of tracking, saving and
            plots); otherwise numpy arrays, as most Keras code does.
    """
    from zoo.data import load_dataset, make_dataset
    from zoo.execution import seed_everything
    from zoo.models import build_model
    from zoo.optim import make_optimizer
    from zoo.train import training_length

    started = time.perf_counter()
    splits = load_dataset(recipe.data.dataset, recipe.data.validation_split)
    seed_everything(recipe.seed)  # after loading, as zoo.train.prepare does
    batch_size, n = recipe.data.batch_size, splits.num_classes
    epochs, _ = training_length(recipe, len(splits.y_train))
    model = build_model(recipe.model.name, recipe.model.args, input_shape=splits.input_shape,
                        num_classes=n, standardize=splits.standardization())
    model.compile(optimizer=make_optimizer(recipe.optimizer),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    if tf_data:
        model.fit(make_dataset(splits.x_train, splits.y_train, n, batch_size,
                               shuffle_seed=recipe.seed),
                  validation_data=(make_dataset(splits.x_val, splits.y_val, n, batch_size)
                                   if splits.has_validation else None),
                  epochs=epochs, shuffle=False, verbose=0)
        model.evaluate(make_dataset(splits.x_test, splits.y_test, n, batch_size), verbose=0)
    else:
        one_hot = np.eye(n, dtype=np.float32)
        model.fit(splits.x_train, one_hot[splits.y_train], batch_size=batch_size, epochs=epochs,
                  validation_data=((splits.x_val, one_hot[splits.y_val])
                                   if splits.has_validation else None), verbose=0)
        model.evaluate(splits.x_test, one_hot[splits.y_test], batch_size=batch_size, verbose=0)
    return time.perf_counter() - started


@contextlib.contextmanager
def _private_store(folder: Path) -> Iterator[None]:
    """Benchmark runs go to a throwaway MLflow store, not the user's."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
