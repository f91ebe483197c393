"""`make bench`: the speed contract as ratios, each against a baseline measured in the same run.

Timings on shared machines are noisy: the same run's time varies by a tenth from one process
to the next. The zoo's training sides therefore run in rounds, every side once a round, each
overhead's side beside its baseline and every other round in reverse (`SIDES`), and each
overhead is the median over the rounds of its ratio within a round (a side against its
baseline in the same round, so a slow stretch of the host that hits both cancels out); the
bare baselines run once, in the first round (`RUN_ONCE`). The ablation and tuning parts run
first; then rounds go on up to `repeats`, while the next one still ends within `BUDGET` of the
bench's start, and at least two run. Nothing here asserts a time. Each training side runs in a
process of its own, so that its thread setting is its own (TensorFlow fixes it when it starts)
and no side inherits another's compiled graphs or warm caches; the time is taken inside the
process, from the data in memory to the evaluated (and, for the zoo, saved and logged) model.
The processes are forked from a server that has imported the modules (`multiprocessing`'s
forkserver) and never started TensorFlow: a fresh interpreter spends 4 s importing TensorFlow,
a quarter of a round, before its clock starts.

Ratios and targets:
- zoo `mnist1d/cnn_paper_plain` / bare Keras `fit` with Keras' defaults: <= 0.55;
- zoo / the fastest bare Keras setup found (XLA, an epoch per call, one thread): reported;
- the default recipe `mnist1d/cnn_paper` (augmentation) / `mnist1d/cnn_paper_plain`: <= 1.15;
- a 4-cell ablation with `--workers 2` / `--workers 1`, as throughput: >= 1.5;
- monitoring every epoch / none: <= 1.10; MLflow tracking / none: <= 1.05;
- tuning: seconds per trial besides its fit: <= 0.5;
- Fashion-MNIST: zoo `fashion_mnist/cnn_small` / the same model in a bare Keras `fit` with
  Keras' defaults, both over `FASHION_EPOCHS` epochs of the whole training split: <= 0.6, with
  each side's images per second and peak memory (one round: the two take minutes).
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zoo import mlflow_layout as layout

PLAIN = "mnist1d/cnn_paper_plain"
AUGMENTED = "mnist1d/cnn_paper"
FASHION = "fashion_mnist/cnn_small"
# Both Fashion-MNIST sides train this many epochs of the recipe (its whole length would take
# most of an hour).
FASHION_EPOCHS = 2


@dataclass(frozen=True)
class Ratio:
    """One line of the report."""

    name: str
    value: float
    target: float | None = None
    at_least: bool = False  # the target is a floor (throughput), not a ceiling
    rounds: tuple[float, ...] = ()  # the ratio in each round, when `value` is their median

    @property
    def met(self) -> bool | None:
        """Whether the value meets its target; None when it has none (only reported)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def verdict(self) -> str:
        """`met`, `NOT met`, or `unsettled` when the rounds fall on both sides of the target
        (the median's side is then the host's noise as much as the zoo's cost); `reported`
        when there is no target."""
        if self.target is None:
            return "reported"
        if len(self.rounds) > 1 and min(self.rounds) < self.target < max(self.rounds):
            return "unsettled"
        return "met" if self.met else "NOT met"

    def line(self) -> str:
        """The report's line: name, value, and the verdict against the target (or `(reported)`)."""
        if self.target is None:
            verdict = "(reported)"
        else:
            sign = ">=" if self.at_least else "<="
            verdict = f"(target {sign} {self.target:g}: {self.verdict})"
        spread = (f"  rounds {', '.join(f'{r:.3f}' for r in self.rounds)}"
                  if len(self.rounds) > 1 else "")
        return f"{self.name:<58} {self.value:7.3f}  {verdict}{spread}"


# Each side: (recipe, how it trains, extra environment). Bare sides build the zoo's model from
# the recipe and train it with plain Keras on numpy arrays. The zoo's sides are in the order
# of a round: each overhead's side beside its baseline (the augmented recipe one run from its
# own), the closer the better on a host whose speed drifts; every other round runs them in
# reverse, so that within two rounds each of a pair runs first once and a steady drift cancels.
SIDES = {
    "bare Keras fit, Keras defaults": (PLAIN, "bare-defaults", {"TF_NUM_INTRAOP_THREADS": "0"}),
    "bare Keras fit, XLA + epoch per call": (PLAIN, "bare-fastest", {}),
    "zoo train, no MLflow": (PLAIN, "zoo-untracked", {}),
    "zoo train": (PLAIN, "zoo", {}),
    "zoo train + monitor every epoch": (PLAIN, "zoo-monitor", {}),
    "zoo train, default recipe (augmentation)": (AUGMENTED, "zoo", {}),
}
# The bare baselines take 1.4 and 3 to 3.5 times the zoo's time and are far from their targets
# (or have none): they run once, which keeps the bench within its 6 minutes.
RUN_ONCE = {"bare Keras fit, Keras defaults", "bare Keras fit, XLA + epoch per call"}
# Seconds from the bench's start within which its last round must end (estimated from the
# round before), so that the bench ends within its 6 minutes.
BUDGET = 330.0


def run_bench(repeats: int = 5) -> list[Ratio]:
    """Run every benchmark and print the ratios with their targets.

    Returns:
        The ratios, in the order printed.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ablation = _ablation(folder)
        tuning = _tuning(folder)
        times = _training_sides(folder, repeats, started)
        fashion = _fashion_sides(folder)
    zoo = statistics.median(times["zoo train"])
    ratios = [
        Ratio("zoo / bare Keras fit with Keras defaults",
              zoo / times["bare Keras fit, Keras defaults"][0], 0.55),
        Ratio("zoo / fastest bare Keras fit (XLA, epoch per call)",
              zoo / times["bare Keras fit, XLA + epoch per call"][0]),
        _paired("default recipe (augmentation) / plain recipe", times,
                "zoo train, default recipe (augmentation)", "zoo train", 1.15),
        Ratio("ablation throughput, --workers 2 / --workers 1 (4 cells)",
              ablation["sequential"] / ablation["parallel"], 1.5, at_least=True),
        _paired("monitor every epoch / no monitor", times, "zoo train + monitor every epoch",
                "zoo train", 1.10),
        _paired("MLflow tracking / no tracking", times, "zoo train", "zoo train, no MLflow",
                1.05),
        Ratio("tuning: seconds per trial besides its fit", tuning["overhead"], 0.5),
        Ratio(f"Fashion-MNIST {FASHION}: zoo / bare Keras fit, Keras defaults",
              fashion["zoo"]["seconds"] / fashion["bare"]["seconds"], 0.6),
    ]
    print(f"\nzoo bench: ratios ({_cpu()}; {time.monotonic() - started:.0f} s in all)")
    for ratio in ratios:
        print("  " + ratio.line())
    for side, label in (("zoo", "zoo train"), ("bare", "bare Keras fit, Keras defaults")):
        measured = fashion[side]
        print(f"  Fashion-MNIST {label:<33} {measured['images_per_second']:7.0f} images/s, "
              f"peak memory {measured['peak_mb']:,.0f} MB")
    return ratios


def _training_sides(folder: Path, repeats: int, started: float) -> dict[str, list[float]]:
    """Every side's times, a round at a time: `times[side][i]` is its time in round i.
    `started`: the bench's start (`time.monotonic()`), which `BUDGET` counts from."""
    print(f"\nzoo bench: {PLAIN} and {AUGMENTED}: up to {repeats} rounds of every zoo side "
          f"(while they end within {BUDGET:.0f} s of the bench's start), the bare baselines in "
          "the first, each in a process of its own", flush=True)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    zoo_sides = [name for name in SIDES if name not in RUN_ONCE]
    for i in range(repeats):
        round_started = time.monotonic()
        order = ([name for name in SIDES if name in RUN_ONCE] if i == 0 else []) + (
            zoo_sides if i % 2 == 0 else zoo_sides[::-1])
        for name in order:
            recipe, kind, env = SIDES[name]
            seconds = _side(recipe, kind, folder, {"MLFLOW_TRACKING_URI": store, **env})
            times[name].append(seconds)
            print(f"  round {i + 1}  {name:<44} {seconds:7.2f} s", flush=True)
        elapsed, last_round = time.monotonic() - started, time.monotonic() - round_started
        if i + 1 < repeats and i >= 1 and elapsed + last_round > BUDGET:
            print(f"  (round {i + 2} would end past {BUDGET:.0f} s: {i + 1} rounds)",
                  flush=True)
            break
    return times


def _fashion_sides(folder: Path) -> dict[str, dict[str, float]]:
    """The zoo and the bare Keras fit of `FASHION`, once each: seconds, images per second of the
    whole run (training images over the run's time) and the process's peak resident memory."""
    from zoo.data import recipe_splits
    from zoo.recipe import load_recipe

    if not _has_fashion_mnist():
        raise RuntimeError("the Fashion-MNIST part needs its files: make data")
    print(f"\nzoo bench: {FASHION}, {FASHION_EPOCHS} epochs, zoo then bare Keras with Keras' "
          "defaults, each in a process of its own", flush=True)
    overrides = [f"training.epochs={FASHION_EPOCHS}"]
    images = FASHION_EPOCHS * len(recipe_splits(load_recipe(FASHION, overrides)).y_train)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    measured = {}
    for side, kind, env in (("zoo", "zoo", {}),
                            ("bare", "bare-defaults", {"TF_NUM_INTRAOP_THREADS": "0"})):
        seconds, peak_mb = _side(FASHION, kind, folder, {"MLFLOW_TRACKING_URI": store, **env},
                                 overrides, with_memory=True)
        measured[side] = {"seconds": seconds, "images_per_second": images / seconds,
                          "peak_mb": peak_mb}
        print(f"  {side:<5} {seconds:7.2f} s, {images / seconds:6.0f} images/s, peak memory "
              f"{peak_mb:,.0f} MB", flush=True)
    return measured


def _has_fashion_mnist() -> bool:
    from zoo.data import fashion_mnist
    from zoo.errors import DataError

    try:
        fashion_mnist.find_files()
    except DataError:
        return False
    return True


def _paired(name: str, times: dict[str, list[float]], side: str, baseline: str,
            target: float) -> Ratio:
    """The ratio `name` of `side`'s time to `baseline`'s: the median over the rounds of their
    ratio within a round, with each round's."""
    rounds = tuple(a / b for a, b in zip(times[side], times[baseline], strict=True))
    return Ratio(name, statistics.median(rounds), target, rounds=rounds)


def _side(recipe: str, kind: str, folder: Path, env: dict[str, str],
          overrides: list[str] | None = None, with_memory: bool = False):
    """The seconds one side took, in a process of its own forked from the sides' server, with
    `overrides` on its recipe; with `with_memory`, (seconds, the process's peak resident MB)."""
    context = _side_server()
    log = folder / "side.log"  # the side's output, shown if it fails
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run_side, name=f"zoo-bench-{kind}",
                            args=(kind, recipe, folder / "models", env, str(log), send,
                                  overrides or []))
    child.start()
    send.close()
    try:
        if not receive.poll(900):
            raise RuntimeError(f"bench side {kind} {recipe} took more than 15 minutes")
        outcome, value = receive.recv()
    except EOFError:  # it died without a word: a crash of TensorFlow's, a kill
        outcome, value = "error", f"the process ended with exit status {child.exitcode}"
    finally:
        child.join(30)  # it ends itself once it has answered
        if child.is_alive():  # hung
            child.kill()
            child.join()
    if outcome != "seconds":
        output = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"bench side {kind} {recipe} failed:\n{output}\n{value}")
    seconds, peak_mb = value
    return (seconds, peak_mb) if with_memory else seconds


# What a side imports before its clock starts, imported once by the server its processes fork
# from: the zoo's training (TensorFlow, Keras), its tracking (MLflow) and data, and the bare
# sides' parts.
SIDE_IMPORTS = ["zoo.workflows.bench", "zoo.tracking", "mlflow.tracking", "zoo.data",
                "zoo.recipe", "zoo.training.trainer", "zoo.models", "zoo.training.optim"]


@functools.cache
def _side_server():
    """The multiprocessing context whose forkserver the sides fork from (started on first use).

    A server, not a fork of this process: this one has started TensorFlow (the tuning part),
    whose thread pools a forked child would not have."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(SIDE_IMPORTS)
    return context


def _run_side(kind: str, recipe: str, model_dir: Path, env: dict[str, str], log: str,
              answer, overrides: list[str]) -> None:
    """A side's process: its environment set before TensorFlow starts, its output into `log`;
    answers ("seconds", (s, peak resident MB)) or ("error", traceback) and ends without tearing
    TensorFlow down (most of a second, which would overlap the next side's start)."""
    import resource
    import traceback

    os.environ.update(env)
    output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(output, 1)
    os.dup2(output, 2)
    try:
        seconds = _time_side(kind, recipe, model_dir, overrides)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
        answer.send(("seconds", (seconds, peak_mb)))
    except BaseException:  # noqa: BLE001  (reported to the bench, which raises it)
        answer.send(("error", traceback.format_exc()))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _ablation(folder: Path) -> dict[str, float]:
    """Wall time of the same 4-cell ablation (2 widths x 2 seeds of the plain recipe) as a
    command, in one process and with two workers, each into a store of its own, whose schema
    exists before the clock starts, as in any use but the first."""
    print("zoo bench: 4-cell ablation of mnist1d/cnn_paper_plain, --workers 1 then 2",
          flush=True)
    import shutil

    from zoo import paths, tracking

    seconds = {}
    for label, workers in (("sequential", 1), ("parallel", 2)):
        store = folder / f"ablation-{workers}"  # a project home of its own: models, store
        shutil.copytree(paths.recipes_dir(), store / "recipes")
        uri = f"sqlite:///{store / 'mlflow.db'}"
        tracking.client_for(uri).search_experiments()
        command = [sys.executable, "-m", "zoo.cli", "ablate", PLAIN,
                   "--axis", "model.channels=16,25", "--seeds", "2", "--workers", str(workers)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env={
            **os.environ, "MLFLOW_TRACKING_URI": uri, "ZOO_HOME": str(store)})
        seconds[label] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"ablation with --workers {workers} failed:\n"
                               f"{done.stderr[-2000:]}")
        print(f"  --workers {workers}: {seconds[label]:.1f} s for 4 runs", flush=True)
    return seconds


def _tuning(folder: Path, trials: int = 5) -> dict[str, float]:
    """Seconds per trial of everything besides `model.fit`: data, build, compile, evaluation,
    saving, the MLflow child run and Keras Tuner's own bookkeeping, in one process."""
    from zoo.recipe import load_recipe
    from zoo.workflows.tune import tune

    print(f"\nzoo bench: tuning mnist1d/mlp, {trials} trials of 2 epochs", flush=True)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'tune.db'}"
    try:
        from zoo import tracking

        tracking.client()  # the store's schema exists before the clock starts, as in real use
        recipe = load_recipe("mnist1d/mlp", ["training.epochs=2", f"tune.max_trials={trials}",
                                             "tune.algorithm=random"])
        source = folder / "tuned.yaml"
        source.write_text(recipe.to_yaml())
        started = time.perf_counter()
        result = tune(load_recipe(source), directory=folder / "tuning", workers=1)
        total = time.perf_counter() - started
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    fit = statistics.fmean(t["fit_seconds"] for t in result.trials)
    overhead = total / len(result.trials) - fit
    print(f"  per trial: fit {fit:.2f} s, everything else {overhead:.2f} s", flush=True)
    return {"fit": fit, "overhead": overhead}


def _cpu() -> str:
    from zoo.tracking import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------
# One side, in its own process (`_run_side`).


def _time_side(kind: str, recipe_name: str, model_dir: Path, overrides: list[str]) -> float:
    from zoo import tracking
    from zoo.data import recipe_splits
    from zoo.recipe import load_recipe

    recipe = load_recipe(recipe_name, overrides)
    splits = recipe_splits(recipe)  # cached: untimed
    if kind.startswith("bare"):
        started = time.perf_counter()
        _bare_fit(recipe, splits, fastest=kind == "bare-fastest")
        return time.perf_counter() - started
    from zoo.training.trainer import train

    if kind == "zoo-monitor":
        recipe = recipe.with_overrides({"monitor.enabled": True, "monitor.every": 1})
    track = kind != "zoo-untracked"
    if track:  # the store's schema exists before the clock starts, as in any real use
        tracking.ensure_experiment(tracking.client(),
                                  layout.experiment_for(recipe.data.dataset))
    started = time.perf_counter()
    train(recipe, track=track, verbose=0, model_dir=model_dir)
    return time.perf_counter() - started


def _bare_fit(recipe, splits, fastest: bool) -> None:
    """The zoo's model, optimizer and data through plain Keras: build, compile, fit, evaluate.

    `fastest`: XLA and a whole epoch per call (what the zoo does); otherwise Keras' defaults.
    """
    import keras
    import numpy as np

    from zoo.models import model_for
    from zoo.recipe import training_length
    from zoo.training.optim import make_optimizer

    keras.utils.set_random_seed(recipe.seed)
    n, batch_size = splits.num_classes, recipe.data.batch_size
    epochs, steps_per_epoch = training_length(recipe, len(splits.y_train))
    model = model_for(recipe, splits)
    options = {"jit_compile": True, "steps_per_execution": steps_per_epoch} if fastest else {}
    model.compile(optimizer=make_optimizer(recipe.optimizer), loss="categorical_crossentropy",
                  metrics=["accuracy"], **options)
    one_hot = np.eye(n, dtype=np.float32)
    validation = ((splits.x_val, one_hot[splits.y_val]) if splits.has_validation else None)
    model.fit(splits.x_train, one_hot[splits.y_train], batch_size=batch_size, epochs=epochs,
              validation_data=validation, verbose=0)
    model.evaluate(splits.x_test, one_hot[splits.y_test], batch_size=batch_size, verbose=0)
