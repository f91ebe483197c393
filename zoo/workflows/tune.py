"""Keras Tuner bridge: a recipe's `tune` block is the search space; every trial is a zoo
training run (same registry, same `train`), tracked as an MLflow child run of one parent run.

The search lives in `tuning/<recipe>/` (Keras Tuner's oracle plus `zoo_tune.json`), so running
the same tune again resumes it: finished trials are not re-run, an interrupted one is retried
(from its last backup, into its MLflow run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras_tuner as kt
import yaml

from zoo import mlflow_layout as layout
from zoo import paths, tracking
from zoo.errors import ArgumentError, ZooError
from zoo.files import write_text_atomically
from zoo.recipe import Recipe, describe_values, validate
from zoo.training.trainer import prepare, train

CHIEF_WAIT_SECONDS = 300  # a worker started before the chief waits this long for its run
EDGE_FRACTION = 0.05  # a best value this close to a range end (in sampling units) is "at the edge"
STATE_FILE = "zoo_tune.json"


class TuneStateError(ZooError):
    """The saved search was made with another space, algorithm, objective or base recipe."""


@dataclass
class TuneResult:
    """What `tune` returns: the parent run, the best trial's values and score, the tuned recipe's
    file, the trials' log and warnings such as a best value at the edge of its range."""

    parent_run_id: str
    best_values: dict[str, Any]
    best_score: float
    tuned_recipe_path: Path
    trials: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class RecipeHyperModel(kt.HyperModel):
    """Declares the recipe's `tune.space` and builds trials through the zoo's own registry."""

    def __init__(self, recipe: Recipe):
        super().__init__(name=recipe.name.replace("/", "_"))
        self.recipe = recipe

    def declare_hyperparameters(self, hp) -> None:
        """Declare each dimension of the recipe's `tune.space` on `hp`, named by its dotted key."""
        for key, dim in self.recipe.tune.space.items():
            if dim.type == "float":
                hp.Float(key, dim.min, dim.max, sampling=dim.sampling)
            elif dim.type == "int":
                hp.Int(key, dim.min, dim.max, step=dim.step)
            elif dim.type == "choice":
                hp.Choice(key, dim.values)
            else:
                hp.Boolean(key)

    def recipe_for(self, values: dict[str, Any]) -> Recipe:
        """The base recipe with a trial's values applied (hyperband's budget as epochs)."""
        overrides = {key: values[key] for key in self.recipe.tune.space if key in values}
        if "tuner/epochs" in values:
            overrides["training.epochs"] = int(values["tuner/epochs"])
            overrides["training.steps"] = None
        return self.recipe.with_overrides(overrides)

    def build(self, hp):
        self.declare_hyperparameters(hp)
        return prepare(self.recipe_for(hp.values)).model


class ZooTuner(kt.Tuner):
    """Runs each trial with `zoo.training`, nested under the tune's parent MLflow run."""

    def __init__(self, recipe: Recipe, parent_run_id: str | None, **kwargs):
        self.recipe = recipe
        self.parent_run_id = parent_run_id
        self.started = time.monotonic()
        self.trial_log: list[dict[str, Any]] = []
        self._finished: dict[tuple[str, str], str] | None = None  # see _finished_run
        super().__init__(hypermodel=RecipeHyperModel(recipe), **kwargs)

    def _finished_run(self, trial_id: str, execution: int) -> str | None:
        """The FINISHED child run of this trial and execution, if a stopped search trained it.

        A stop that lands after a trial's run has finished but before Keras Tuner recorded the
        trial makes the resumed search give the trial out again; its run is then reused rather
        than trained a second time. The parent's finished children are read once per process.
        """
        if self.parent_run_id is None:
            return None
        if self._finished is None:
            self._finished = {
                (run.data.tags.get(layout.TRIAL_ID), run.data.tags.get(layout.EXECUTION)):
                    run.info.run_id
                for run in tracking.child_runs(tracking.client(), self.parent_run_id)
                if run.info.status == "FINISHED"}
        return self._finished.get((trial_id, str(execution)))

    def _score(self, history: list[float]) -> float:
        return max(history) if self.recipe.tune.objective.direction == "max" else min(history)

    def run_trial(self, trial, *args, **kwargs):
        objective = self.recipe.tune.objective
        values = trial.hyperparameters.values
        recipe = self.hypermodel.recipe_for(values)
        shown = {k: values[k] for k in self.recipe.tune.space if k in values}
        scores, fit_seconds, trial_started = [], 0.0, time.perf_counter()
        for execution in range(self.recipe.tune.executions_per_trial):
            run_recipe = recipe.with_overrides({"seed": recipe.seed + execution})
            earlier = self._finished_run(trial.trial_id, execution)
            if earlier is not None:
                history = tracking.client().get_metric_history(earlier, objective.name)
                scores.append(self._score([m.value for m in sorted(history,
                                                                   key=lambda m: m.step)]))
                continue
            result = train(
                run_recipe, verbose=0, parent_run_id=self.parent_run_id,
                run_name=f"trial {trial.trial_id} " + describe_values(shown),
                tags={layout.TRIAL_ID: trial.trial_id, layout.EXECUTION: execution,
                      **{layout.TRIAL_VALUE_PREFIX + k: v for k, v in shown.items()}},
                # A trial's run is for comparing trials: no figures, no MLflow Model (the best
                # trial's recipe is written out, and `zoo train` on it gives its model). It is
                # backed up: the tuner gives an interrupted trial out again (a killed worker's
                # to the same tuner id), and it resumes into the same run.
                plots=False, mlflow_model=False,
            )
            scores.append(self._score(result.history[objective.name]))
            fit_seconds += result.fit_seconds
        score = statistics.fmean(scores)
        self.trial_log.append({"trial_id": trial.trial_id, "values": shown, "score": score,
                               "seconds": time.perf_counter() - trial_started,
                               "fit_seconds": fit_seconds})
        self._progress(trial.trial_id, shown, score)
        return {objective.name: score}

    def _progress(self, trial_id: str, values: dict[str, Any], score: float) -> None:
        objective = self.recipe.tune.objective
        # get_best_trials also works through a distributed worker's oracle client.
        scores = [t.score for t in self.oracle.get_best_trials(1) if t.score is not None]
        best = max([*scores, score]) if objective.direction == "max" else min([*scores, score])
        elapsed = time.monotonic() - self.started
        total = self.recipe.tune.max_trials if self.recipe.tune.algorithm != "hyperband" else "?"
        print(f"trial {int(trial_id) + 1}/{total}  {describe_values(values)}  "
              f"{objective.name} {score:.4f}  "
              f"best {best:.4f}  elapsed {elapsed:.0f} s", flush=True)

    # Trials save their own models through zoo.training; Keras Tuner's checkpoints are not needed.
    def save_model(self, trial_id, model, step=0):
        return None

    def load_model(self, trial):
        raise NotImplementedError("zoo trials are saved by zoo.training; see the MLflow child runs")


def shared_role() -> str | None:
    """This process's part in a search spread over machines, or None for a search `zoo tune`
    runs itself: the KERASTUNER_TUNER_ID set beside KERASTUNER_ORACLE_IP and
    KERASTUNER_ORACLE_PORT (Keras Tuner's own variables; an id with `chief` in it is the
    chief, as Keras Tuner has it).

    Raises:
        ArgumentError: KERASTUNER_ORACLE_IP is set without the other two, or a bad port.
    """
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return None
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")
               if not os.environ.get(name)]
    if missing:
        raise ArgumentError(
            f"tune: KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not; a search "
            "across machines needs all three (KERASTUNER_TUNER_ID=chief on one machine, "
            "tuner0, tuner1, ... on the others), or unset KERASTUNER_ORACLE_IP to search here")
    _oracle_address()  # a bad port is refused before anything runs
    return os.environ["KERASTUNER_TUNER_ID"]


def is_chief(role: str) -> bool:
    """Keras Tuner's rule: an id with `chief` in it serves the oracle."""
    return "chief" in role


def _oracle_address() -> tuple[str, int]:
    from zoo.workflows.workers import oracle_address

    return oracle_address("tune")


def tune(recipe: Recipe, *, overwrite: bool = False, directory: Path | None = None,
         workers: int | None = 1, role: str | None = None) -> TuneResult:
    """Run (or resume) the search a recipe's `tune` block describes.

    Args:
        recipe: a recipe with a non-empty `tune.space`.
        overwrite: discard a saved search of this recipe instead of resuming it.
        directory: where the search state lives (default `tuning/<recipe name>`).
        workers: 1 searches in this process; N > 1 runs Keras Tuner's chief and N workers on
            this machine, logging through a local MLflow server; None picks one per core (at
            most one per trial; 1 for a bayesian search, see `_pick_workers`).
        role: a chief's id from `shared_role`: serve the search to workers started elsewhere
            (`join`) instead of starting any (`workers` is then not used).

    Returns:
        The best trial's values and score, the parent run id and the tuned recipe's path.
    """
    _check_space(recipe)
    if workers is not None and workers < 1:
        raise ArgumentError(f"tune: --workers must be at least 1 (received {workers}); 1 "
                            "searches in this process, N > 1 starts N worker processes")
    folder = directory or paths.project_root() / "tuning" / recipe.name
    state = _load_state(folder, recipe, overwrite)
    parent_id = state.get("parent_run_id")
    if parent_id and tracking.find_run(tracking.client(), parent_id) is None:
        raise TuneStateError(
            f"{recipe.name}: the saved search in {folder} was recorded under MLflow run "
            f"{parent_id}, which is not in {tracking.tracking_uri()} (was the store cleaned?); "
            "run with --overwrite to start afresh, or set MLFLOW_TRACKING_URI to the store it "
            "was recorded in")
    workers = 1 if role is not None else _pick_workers(recipe, workers)
    experiment = layout.experiment_for(recipe.data.dataset)
    with tracking.start_run(experiment, f"tune {recipe.name}", {
        layout.RECIPE: recipe.name, layout.FINGERPRINT: recipe.fingerprint,
        layout.TUNE_ALGORITHM: recipe.tune.algorithm,
    }, resume_run_id=state.get("parent_run_id")) as parent:
        if "parent_run_id" not in state:
            state = {**_signature(recipe), "parent_run_id": parent.run_id}
            folder.mkdir(parents=True, exist_ok=True)
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
            parent.log_params({"tune.algorithm": recipe.tune.algorithm,
                               "tune.objective": recipe.tune.objective.name,
                               "tune.direction": recipe.tune.objective.direction,
                               "tune.max_trials": recipe.tune.max_trials,
                               "tune.space": recipe.tune.model_dump(mode="json")["space"]})
        started = time.monotonic()
        if role is not None:
            tuner = _serve_search(recipe, folder, parent.run_id)
        elif workers > 1:
            tuner = _run_distributed(recipe, folder, parent.run_id, workers)
        else:
            tuner = make_tuner(recipe, folder, parent.run_id)
            tuner.search(verbose=0)  # one zoo progress line per trial instead
        result = _finish(recipe, tuner, parent, folder)
        parent.log_metrics({"tune_seconds": time.monotonic() - started})
        return result


def _check_space(recipe: Recipe) -> None:
    if not recipe.tune.space:
        raise ZooError(f"{recipe.name}: tune.space is empty; add dimensions, e.g. "
                       "tune.space='{optimizer.learning_rate: {type: float, min: 1e-4, "
                       "max: 1e-1, sampling: log}}'")


def _pick_workers(recipe: Recipe, requested: int | None) -> int:
    from zoo.workflows.workers import pick_workers

    if requested is None and recipe.tune.algorithm == "bayesian":
        # Its proposals depend on which trials have finished: parallel workers would change
        # what it tries, and the result would depend on timing.
        print("zoo: 1 worker: a bayesian search proposes each trial from the finished ones, so "
              "parallel workers would change the trials; --workers N trades that for speed",
              flush=True)
        return 1
    trials = None if recipe.tune.algorithm == "hyperband" else recipe.tune.max_trials
    return pick_workers(requested, trials, "tune", unit="trial")


def make_tuner(recipe: Recipe, folder: Path, parent_run_id: str | None) -> ZooTuner:
    """The tuner of a recipe's search, its state in `folder` (resumed, never overwritten); trial
    runs nest under `parent_run_id`."""
    return ZooTuner(recipe, parent_run_id, oracle=_oracle(recipe), directory=str(folder.parent),
                    project_name=folder.name, overwrite=False)


def _oracle(recipe: Recipe):
    spec = recipe.tune
    objective = kt.Objective(spec.objective.name, spec.objective.direction)
    common = {"objective": objective, "seed": spec.seed}
    if spec.algorithm == "hyperband":
        return kt.oracles.HyperbandOracle(max_epochs=spec.max_epochs, **common)
    oracles = {"random": kt.oracles.RandomSearchOracle, "grid": kt.oracles.GridSearchOracle,
               "bayesian": kt.oracles.BayesianOptimizationOracle}
    return oracles[spec.algorithm](max_trials=spec.max_trials, **common)


def _signature(recipe: Recipe) -> dict[str, Any]:
    """What a resumed search must share with the saved one."""
    spec = recipe.tune.model_dump(mode="json")
    # Monitoring observes trials without changing them: it may differ on resume.
    base = {k: v for k, v in recipe.resolved().items() if k not in ("tune", "monitor")}
    return {"space": spec["space"], "algorithm": spec["algorithm"],
            "objective": spec["objective"], "recipe": base}


def _load_state(folder: Path, recipe: Recipe, overwrite: bool) -> dict[str, Any]:
    state_file = folder / STATE_FILE
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    if not state_file.exists():
        if folder.exists():  # a search without our state: not ours to resume
            shutil.rmtree(folder)
        return {}
    state = json.loads(state_file.read_text())
    wanted = _signature(recipe)
    changed = [key for key in wanted if state.get(key) != wanted[key]]
    if changed:
        raise TuneStateError(
            f"{recipe.name}: a saved search in {folder} used another {', '.join(changed)}; "
            "run with --overwrite to start afresh (the saved trials are discarded), or restore "
            "the previous settings to resume it")
    return state


def _finish(recipe: Recipe, tuner: ZooTuner, parent, folder: Path) -> TuneResult:
    objective = recipe.tune.objective
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    if not trials:
        raise ZooError(f"{recipe.name}: no trial finished; see the failed child runs in MLflow")
    best = tuner.oracle.get_best_trials(1)[0]
    best_recipe = tuner.hypermodel.recipe_for(best.hyperparameters.values)
    path = write_tuned_recipe(recipe, best_recipe)
    values = {k: best.hyperparameters.values[k] for k in recipe.tune.space
              if k in best.hyperparameters.values}
    warnings = edge_warnings(recipe, values)
    for warning in warnings:
        print(f"zoo: warning: {warning}", flush=True)
    parent.log_metrics({f"best_{objective.name}": best.score,
                        "trials_finished": len(trials)})
    parent.set_tags({layout.TUNE_BEST_TRIAL: best.trial_id,
                     layout.TUNE_BEST_VALUES: json.dumps(values),
                     **({layout.TUNE_EDGE_WARNINGS: " | ".join(warnings)} if warnings else {})})
    parent.log_artifact(path)
    return TuneResult(parent.run_id, values, float(best.score), path,
                      trials=tuner.trial_log, warnings=warnings)


def write_tuned_recipe(recipe: Recipe, best: Recipe) -> Path:
    """Write the best trial as a complete recipe beside the tuned one (`<name>.tuned.yaml`)."""
    source = recipe.source or paths.recipes_dir() / f"{recipe.name}.yaml"
    path = source.with_name(source.name.removesuffix(".yaml") + ".tuned.yaml")
    resolved = {k: v for k, v in best.resolved().items() if k != "tune"}
    resolved["name"] = f"{recipe.name}.tuned"
    validate(resolved)  # it must train as it stands
    header = (f"# The best trial of `zoo tune {recipe.name}` ({recipe.tune.algorithm}, "
              f"{recipe.tune.objective.name}), as a complete recipe.\n")
    write_text_atomically(path, header + yaml.safe_dump(resolved, sort_keys=False))
    return path


def edge_warnings(recipe: Recipe, best: dict[str, Any]) -> list[str]:
    """Numeric dimensions whose best value lies at the edge of the searched range."""
    warnings = []
    for key, dim in recipe.tune.space.items():
        if dim.type not in ("float", "int") or key not in best:
            continue
        position = _position(best[key], dim)
        if position <= EDGE_FRACTION or position >= 1 - EDGE_FRACTION:
            edge = "lower" if position <= EDGE_FRACTION else "upper"
            warnings.append(f"the best {key}={best[key]:.4g} lies at the {edge} edge of "
                            f"[{dim.min:g}, {dim.max:g}]: widen the range, or run "
                            f"`zoo tune {recipe.name} --refine`")
    return warnings


def _position(value: float, dim) -> float:
    if getattr(dim, "sampling", "linear") == "log":
        return (math.log(value) - math.log(dim.min)) / (math.log(dim.max) - math.log(dim.min))
    return (value - dim.min) / (dim.max - dim.min)


def refine_space(recipe: Recipe, top: list[dict[str, Any]]) -> dict[str, Any]:
    """A narrower space around the best trials' values, for a second, finer pass.

    Numeric ranges shrink to the span of the best values, widened by a quarter of the old range
    (in sampling units) on each side; a best value at an edge pushes the range past it. Choices
    keep only the values the best trials used.
    """
    space = {}
    for key, dim in recipe.tune.space.items():
        seen = [t[key] for t in top if key in t]
        spec = dim.model_dump()
        if dim.type in ("float", "int") and seen:
            log = getattr(dim, "sampling", "linear") == "log"
            to_unit = (lambda v: math.log(v)) if log else (lambda v: v)
            from_unit = (lambda u: math.exp(u)) if log else (lambda u: u)
            margin = (to_unit(dim.max) - to_unit(dim.min)) / 4
            low = from_unit(min(map(to_unit, seen)) - margin)
            high = from_unit(max(map(to_unit, seen)) + margin)
            if dim.type == "int":
                low, high = math.floor(low), math.ceil(high)
                high = max(high, low + 1)
            spec.update(min=low, max=high)
        elif dim.type == "choice" and seen:
            spec["values"] = [v for v in dim.values if v in seen]
        space[key] = spec
    return space


def refine(recipe: Recipe, top_k: int = 3, **kwargs) -> TuneResult:
    """Second pass: the same search around the best `top_k` trials of the saved first pass."""
    folder = kwargs.pop("directory", None) or paths.project_root() / "tuning" / recipe.name
    state_file = folder / STATE_FILE
    if not state_file.exists():
        raise ZooError(f"{recipe.name}: no saved search in {folder} to refine; run "
                       f"`zoo tune {recipe.name}` first")
    _load_state(folder, recipe, overwrite=False)
    tuner = make_tuner(recipe, folder, None)
    best = tuner.oracle.get_best_trials(top_k)
    top = [t.hyperparameters.values for t in best]
    refined = recipe.with_overrides({"tune.space": refine_space(recipe, top)})
    print("zoo: refined space: " + json.dumps(refined.tune.model_dump(mode="json")["space"]))
    return tune(refined, directory=folder.with_name(folder.name + ".refine"), **kwargs)


# ---------------------------------------------------------------------------------------------
# Distributed: Keras Tuner's chief/worker mode on this machine.


def _run_distributed(recipe: Recipe, folder: Path, parent_run_id: str, workers: int) -> ZooTuner:
    """Run the chief (the oracle) and `workers` worker processes, wait, return the results.

    Workers log to MLflow concurrently, so with a SQLite store a local MLflow server on
    127.0.0.1 fronts the database for the duration of the search (`zoo.workers`).
    """
    from zoo.workflows.workers import run_processes

    recipe_path = _recipe_file(recipe, folder)
    run_processes(["tune-role", str(recipe_path), "--directory", str(folder),
                   "--parent-run", parent_run_id], workers, name=recipe.name)
    return make_tuner(recipe, folder, parent_run_id)


def _serve_search(recipe: Recipe, folder: Path, parent_run_id: str) -> ZooTuner:
    """The chief of a search across machines: serve the oracle at KERASTUNER_ORACLE_IP:PORT
    to the workers (`join`) until none has a trial left, reporting each finished trial."""
    from zoo.workflows.workers import serve_until_done

    host, port = _oracle_address()
    tuner = make_tuner(recipe, folder, parent_run_id)  # as the chief: the oracle itself
    print(f"zoo: serving the search of {recipe.name} (MLflow run {parent_run_id}) on "
          f"{host}:{port}; on each machine run the same `zoo tune` with MLFLOW_TRACKING_URI="
          f"{tracking.tracking_uri()}, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT={port} "
          "and KERASTUNER_TUNER_ID=tuner0, tuner1, ...", flush=True)
    reported: set[str] = set()

    def report() -> None:
        for trial in list(tuner.oracle.trials.values()):
            if trial.status == "COMPLETED" and trial.trial_id not in reported:
                reported.add(trial.trial_id)
                print(f"zoo: trial {trial.trial_id} finished: {recipe.tune.objective.name} "
                      f"{trial.score:.4f} ({len(reported)} finished)", flush=True)

    serve_until_done(tuner.oracle, host, port, poll=report)
    report()
    return tuner


def join(recipe: Recipe, role: str, directory: Path | None = None) -> int:
    """A worker of a search across machines: train the trials the chief at
    KERASTUNER_ORACLE_IP:PORT gives out, into its MLflow run, until none is left.

    A worker started again under the same KERASTUNER_TUNER_ID (after a kill) gets back the
    trial it held, which resumes from its last backup.

    Returns:
        How many trials this worker trained.
    """
    _check_space(recipe)
    host, port = _oracle_address()
    parent_run_id = _chief_run(recipe)
    print(f"zoo: {role} joins the search of {recipe.name} (MLflow run {parent_run_id}) served "
          f"on {host}:{port}", flush=True)
    folder = directory or paths.project_root() / "tuning" / recipe.name
    tuner = make_tuner(recipe, folder, parent_run_id)  # as a worker: asks the chief's oracle
    tuner.search(verbose=0)
    return len(tuner.trial_log)


def _chief_run(recipe: Recipe) -> str:
    """The RUNNING parent run the chief opened for this recipe and configuration, waited for
    (a worker may start first): the only link a worker needs besides the chief's address."""
    client = tracking.client()
    query = (f"tags.`{layout.RECIPE}` = '{recipe.name}' and "
             f"tags.`{layout.FINGERPRINT}` = '{recipe.fingerprint}' and "
             "attributes.status = 'RUNNING'")
    deadline = time.monotonic() + CHIEF_WAIT_SECONDS
    said = False
    while True:
        experiment = client.get_experiment_by_name(layout.experiment_for(recipe.data.dataset))
        runs = [] if experiment is None else [
            run for run in client.search_runs([experiment.experiment_id], query,
                                              order_by=["attributes.start_time DESC"])
            if layout.TUNE_ALGORITHM in run.data.tags]
        if runs:
            return runs[0].info.run_id
        if time.monotonic() > deadline:
            raise ZooError(
                f"tune: no running search of {recipe.name} with this configuration in "
                f"{tracking.tracking_uri()} after {CHIEF_WAIT_SECONDS} s; start the chief "
                "(KERASTUNER_TUNER_ID=chief) with the same recipe, overrides and "
                "MLFLOW_TRACKING_URI")
        if not said:
            print(f"zoo: waiting for the chief's search of {recipe.name} in "
                  f"{tracking.tracking_uri()} ...", flush=True)
            said = True
        time.sleep(2)


def _recipe_file(recipe: Recipe, folder: Path) -> Path:
    """The resolved recipe, written for the worker processes to load."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    return path


def run_role(recipe: Recipe, folder: Path, parent_run_id: str) -> int:
    """Body of a chief or worker process (its role comes from KERASTUNER_TUNER_ID).

    Returns:
        The process's exit code.
    """
    from zoo.workflows import workers

    return workers.run_role(lambda: make_tuner(recipe, folder, parent_run_id).search(verbose=0))
