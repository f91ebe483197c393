"""Several training processes at once, through Keras Tuner's chief/worker machinery.

`zoo tune --workers N` runs Keras Tuner's own search that way; `zoo ablate` and `zoo build-zoo`
hand it a fixed list of jobs instead. For jobs the chief's oracle (`JobOracle`) gives out trial
k = job k, each exactly once, and a worker trains it with the same `train(...)` call the
sequential path makes (same recipe, seed, run name, tags and parent run). A job's recipe and seed
fix its result, whichever worker trains it and in whatever order: a fresh process trains the
same weights as one that trained other jobs before.

Processes, all on this machine:

- the chief (KERASTUNER_TUNER_ID=chief): the oracle, a gRPC server on 127.0.0.1;
- N workers (`tuner0` ... `tuner<N-1>`): each asks the chief for a trial, trains it, repeats;
- with a SQLite store, a temporary MLflow server on 127.0.0.1 that takes the workers'
  concurrent writes (SQLite alone would fail them with "database is locked").

Workers of a job list write `<index>.started`, `<index>.result.json` or `<index>.error.json`
beside the job file; the parent reads them for its progress lines and results. A job that
raises a `ZooError` stops the whole run with its message; Ctrl-C or SIGTERM in the parent stops
every worker, whose runs end KILLED.

Across machines the pieces are the same as for `zoo tune` (docs/experiments.md, "Workers"): a shared
MLflow server, the chief's address in KERASTUNER_ORACLE_IP/PORT, and `zoo jobs-role JOBS.json`
on each machine with a tuner id, the job file's folder shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras_tuner as kt

from zoo.errors import ArgumentError, ZooError
from zoo.files import write_text_atomically
from zoo.recipe import Recipe

PARENT_ENVIRONMENT = "ZOO_WORKER_PARENT"  # set for the processes started here
STOP_SECONDS = 60  # a stopped worker finishes its batch and marks its run KILLED within this
POLL_SECONDS = 0.5
OBJECTIVE = "test_accuracy"  # only recorded in the oracle: nothing is chosen by it


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def check_workers(requested: int | None, command: str) -> None:
    """Refuse a `--workers` below 1 (None, one per core, is fine)."""
    if requested is not None and requested < 1:
        raise ArgumentError(f"{command}: --workers must be at least 1 (received {requested}); "
                            "1 trains in this process, N > 1 starts N worker processes")


def pick_workers(requested: int | None, jobs: int | None, command: str,
                 unit: str = "job") -> int:
    """How many processes to use for `jobs` jobs, and say so when it is not what was asked.

    Args:
        requested: `--workers`; None picks one per core.
        jobs: how many jobs there are to run (more workers would idle); None if unknown.
        command: for messages (`ablate`).
        unit: what a job is called in messages (`trial`).

    Returns:
        At least 1; 1 means "in this process".

    Raises:
        ArgumentError: `requested` is below 1.
    """
    check_workers(requested, command)
    wanted = cores() if requested is None else requested
    chosen = max(1, wanted if jobs is None else min(wanted, jobs))
    plural = "s" if chosen > 1 else ""
    to_run = "" if jobs is None else f", {jobs} {unit}{'s' if jobs != 1 else ''} to run"
    if jobs == 0:
        pass  # nothing to run, nothing to say
    elif requested is None:
        print(f"zoo: {chosen} worker{plural} ({cores()} cores{to_run}; --workers N to choose)",
              flush=True)
    elif chosen < wanted:
        print(f"zoo: {chosen} worker{plural}: only {jobs} {unit}{'s' if jobs != 1 else ''} to "
              "run", flush=True)
    elif chosen > 1:
        print(f"zoo: {chosen} workers{to_run}", flush=True)
    return chosen


# ---------------------------------------------------------------------------------------------
# Processes: the chief and its workers


def run_processes(role: Sequence[str], workers: int, *, name: str, track: bool = True,
                  poll: Callable[[], None] | None = None) -> None:
    """Run `zoo <role...>` as Keras Tuner's chief and `workers` workers; wait for them.

    Args:
        role: the hidden subcommand and its arguments (`["jobs-role", "jobs.json"]`).
        workers: worker processes besides the chief.
        name: what runs, for messages.
        track: the workers log to MLflow.
        poll: called about twice a second while waiting (progress; it may raise to stop).

    Raises:
        ZooError: a worker or the chief failed.
    """
    from zoo import server, tracking

    uri = tracking.tracking_uri()
    # The workers write to the store directly, SQLite included: the parent creates and
    # migrates it first (below), and SQLite serializes the few small writes a run
    # makes (metrics go in batches every few seconds). A temporary server in between cost
    # 6 s of start-up, as much as a short job. Other local stores (file:) still get one.
    direct = not track or uri.startswith(("sqlite:", "http://", "https://", "postgresql"))
    if track and uri.startswith("sqlite:"):
        # Created and migrated here, once: workers that open a new SQLite store together both
        # try to migrate its schema, and one of them fails.
        tracking.client()
    store = contextlib.nullcontext(uri) if direct else server.local_server_if_needed(uri)
    with store as worker_uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": worker_uri,
               "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(server.free_port()),
               PARENT_ENVIRONMENT: str(os.getpid()),
               # Links to a temporary server on every run's end are no use to anyone.
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": os.environ.get(
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")}
        command = [sys.executable, "-m", "zoo.cli", *role]
        processes: dict[str, subprocess.Popen] = {}
        try:
            # Workers need not wait for the chief: their gRPC calls wait until it listens.
            for tuner_id in ["chief", *(f"tuner{i}" for i in range(workers))]:
                # A session of their own: a terminal's Ctrl-C reaches the parent only, which
                # then stops each process with exactly one SIGTERM (a second signal would
                # abort a worker at once, maybe before it marks its run KILLED).
                processes[tuner_id] = subprocess.Popen(
                    command, env={**env, "KERASTUNER_TUNER_ID": tuner_id},
                    start_new_session=True)
            _wait(processes, name, poll)
        finally:
            _stop(processes)


def _wait(processes: dict[str, subprocess.Popen], name: str,
          poll: Callable[[], None] | None) -> None:
    check = poll or (lambda: None)
    workers = {k: p for k, p in processes.items() if k != "chief"}
    while True:
        check()
        chief = processes["chief"].poll()
        if chief not in (None, 0):
            raise ZooError(f"{name}: the Keras Tuner chief (the oracle server) exited with "
                           f"code {chief}; see its output above")
        codes = {k: p.poll() for k, p in workers.items()}
        failed = {k: c for k, c in codes.items() if c not in (None, 0)}
        if failed or all(c == 0 for c in codes.values()):
            check()  # a failed job's own message, or the last results
            if failed:
                listed = ", ".join(f"{k} (exit code {c})" for k, c in failed.items())
                raise ZooError(f"{name}: worker {listed} failed; see its output above")
            return
        time.sleep(POLL_SECONDS)


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM whatever still runs, wait for it to wrap up, SIGKILL what does not."""
    alive = {k: p for k, p in processes.items() if p.poll() is None}
    if not alive:
        return
    busy = [k for k in alive if k != "chief"]  # after a normal end only the chief is left
    if busy:
        # On stdout: stderr keeps the one-line error of a failed run.
        print(f"zoo: stopping worker {', '.join(busy)} (a stopped run ends KILLED) ...",
              flush=True)
    with _signals_deferred():  # a second Ctrl-C must not orphan workers half-way through
        for process in alive.values():
            process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in alive.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)


def exit_with_parent() -> None:
    """In a process started by `run_processes`: stop (as on SIGTERM) if the parent dies, so
    that a killed `zoo ablate` leaves no chief or worker behind."""
    parent = os.environ.get(PARENT_ENVIRONMENT)
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="zoo-exit-with-parent", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Jobs: a fixed list of training runs


@dataclass
class Job:
    """One `train(...)` call: everything that decides its result and how it is recorded."""

    recipe: Recipe
    label: str  # progress lines
    run_name: str | None = None
    parent_run_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    track: bool = True
    model_dir: Path | None = None

    def train(self):
        from zoo.train import train

        return train(self.recipe, track=self.track, verbose=0, model_dir=self.model_dir,
                     run_name=self.run_name, parent_run_id=self.parent_run_id,
                     tags=self.tags or None)

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe.resolved(),
                "source": str(self.recipe.source) if self.recipe.source else None,
                "label": self.label, "run_name": self.run_name,
                "parent_run_id": self.parent_run_id, "tags": self.tags, "track": self.track,
                "model_dir": str(self.model_dir) if self.model_dir else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        from zoo.recipe import validate

        # The resolved recipe and its source file: the same params, fingerprint and
        # `zoo.recipe_path` tag as the recipe the parent holds.
        source = Path(data["source"]) if data["source"] else None
        return cls(recipe=validate(data["recipe"], source=source), label=data["label"],
                   run_name=data["run_name"], parent_run_id=data["parent_run_id"],
                   tags=data["tags"], track=data["track"],
                   model_dir=Path(data["model_dir"]) if data["model_dir"] else None)


@dataclass
class JobResult:
    """What the parent needs of a finished job (a `zoo.train.Result` without the model, unless
    it was trained in this process)."""

    test_accuracy: float
    test_loss: float
    weights_sha256: str
    model_path: Path
    epochs: int
    seconds: float
    run_id: str | None
    history: dict[str, list[float]]
    model: Any = None

    @classmethod
    def of(cls, result, keep_model: bool) -> JobResult:
        return cls(result.test_accuracy, result.test_loss, result.weights_sha256,
                   Path(result.model_path), result.epochs, result.seconds, result.run_id,
                   result.history, result.model if keep_model else None)

    def to_json(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                "weights_sha256": self.weights_sha256, "model_path": str(self.model_path),
                "epochs": self.epochs, "seconds": self.seconds, "run_id": self.run_id,
                "history": self.history}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        return cls(**{**data, "model_path": Path(data["model_path"])})

    def load_model(self):
        """The trained model: kept from this process, else read from its file."""
        if self.model is None:
            import keras

            self.model = keras.saving.load_model(self.model_path, compile=False)
        return self.model


class JobError(ZooError):
    """A job failed in a worker process."""


def run_jobs(jobs: Sequence[Job], workers: int, *, name: str,
             on_start: Callable[[int], None] | None = None,
             on_done: Callable[[int, JobResult], None] | None = None) -> list[JobResult]:
    """Train every job; 1 worker trains them here in order, N > 1 in N worker processes.

    Args:
        jobs: the jobs; a job's index in this list is its trial number.
        workers: from `pick_workers`.
        name: what runs, for messages.
        on_start: called with a job's index when it starts (in this process).
        on_done: called with a job's index and result when it finishes (in this process).

    Returns:
        The results, in the order of `jobs`.

    Raises:
        ZooError: a job failed (the first failure's message; the other workers are stopped).
    """
    results: list[JobResult | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            if on_start:
                on_start(index)
            results[index] = JobResult.of(job.train(), keep_model=True)
            if on_done:
                on_done(index, results[index])
        return results  # type: ignore[return-value]

    folder = Path(tempfile.mkdtemp(prefix="zoo-jobs-"))
    try:
        spec = folder / "jobs.json"
        spec.write_text(json.dumps({"jobs": [job.to_json() for job in jobs]}))
        out = folder / "results"
        out.mkdir()
        started: set[int] = set()

        def collect() -> None:
            for path in sorted(out.glob("*.error.json")):
                error = json.loads(path.read_text())
                raise JobError(error["message"])
            for path in sorted(out.glob("*.started"), key=_index):
                if _index(path) not in started:
                    started.add(_index(path))
                    if on_start:
                        on_start(_index(path))
            for path in sorted(out.glob("*.result.json"), key=_index):
                index = _index(path)
                if results[index] is None:
                    results[index] = JobResult.from_json(json.loads(path.read_text()))
                    if on_done:
                        on_done(index, results[index])

        run_processes(["jobs-role", str(spec)], min(workers, len(jobs)), name=name,
                      track=any(job.track for job in jobs), poll=collect)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    missing = [jobs[i].label for i, result in enumerate(results) if result is None]
    if missing:
        raise JobError(f"{name}: the workers ended without a result for {', '.join(missing)}")
    return results  # type: ignore[return-value]


def _index(path: Path) -> int:
    return int(path.name.split(".")[0])


class JobOracle(kt.Oracle):
    """Trial k is job k: each job given out once, in order, to whichever worker asks.

    Keras Tuner's GridSearchOracle would also walk a `job` choice, but it proposes a trial's
    successor only when that trial ends, which keeps at most two workers busy.
    """

    def __init__(self, jobs: int):
        space = kt.HyperParameters()
        space.Int("job", 0, max(jobs - 1, 1))
        super().__init__(objective=kt.Objective(OBJECTIVE, "max"), max_trials=jobs,
                         hyperparameters=space)

    def populate_space(self, trial_id):
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": {"job": int(trial_id)}}


class _Failed(kt.errors.FatalError):
    """Ends a worker's search: Keras Tuner would otherwise log the trial as failed and go on."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class JobTuner(kt.engine.base_tuner.BaseTuner):
    """A worker: trains the job of each trial the chief gives it and writes down the result."""

    def __init__(self, jobs: Sequence[Job], out: Path, **kwargs):
        self.jobs, self.out = jobs, out
        super().__init__(**kwargs)

    def run_trial(self, trial, *args, **kwargs):
        index = int(trial.hyperparameters.values["job"])
        job = self.jobs[index]
        write_text_atomically(self.out / f"{index}.started", self.tuner_id)
        try:
            result = job.train()
        except ZooError as err:
            _write_error(self.out, index, str(err))
            raise _Failed(2) from err
        except Exception as err:
            traceback.print_exc()
            _write_error(self.out, index, f"{job.label}: {type(err).__name__}: {err} (see the "
                         "worker's traceback above)")
            raise _Failed(1) from err
        write_text_atomically(self.out / f"{index}.result.json",
                              json.dumps(JobResult.of(result, keep_model=False).to_json()))
        return {OBJECTIVE: result.test_accuracy}


def run_job_role(spec: Path) -> int:
    """Body of a chief or worker process of `run_jobs` (its role from KERASTUNER_TUNER_ID).

    Returns:
        The exit code: 0, 2 when a job raised a ZooError, 1 for any other failure (the parent
        reports the job's message; a traceback is printed here).
    """

    def search() -> None:
        jobs = [Job.from_json(job) for job in json.loads(spec.read_text())["jobs"]]
        tuner = JobTuner(jobs, spec.parent / "results", oracle=JobOracle(len(jobs)),
                         directory=str(spec.parent), project_name="oracle")
        tuner.search(verbose=0)  # the parent prints one line per job instead

    return run_role(search)


def run_role(search: Callable[[], None]) -> int:
    """Run a chief's or a worker's `search` in a process started by `run_processes`.

    Returns:
        The process's exit code.
    """
    exit_with_parent()
    try:
        search()
    except _Failed as failed:
        return failed.code
    except KeyboardInterrupt:
        if os.environ.get("KERASTUNER_TUNER_ID") == "chief":
            # The parent stops the chief once the workers are done (Keras Tuner's chief checks
            # for that only every 20 s): nothing to report.
            return 130
        raise
    return 0


def _write_error(out: Path, index: int, message: str) -> None:
    write_text_atomically(out / f"{index}.error.json", json.dumps({"message": message}))
