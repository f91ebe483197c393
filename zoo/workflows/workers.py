"""Several training processes at once, through Keras Tuner's chief/worker machinery.

`zoo tune --workers N` runs Keras Tuner's own search that way; `zoo ablate` and `zoo build-zoo`
hand it a fixed list of jobs instead. For jobs the chief's oracle (`JobOracle`) gives out trial
k = job k, each exactly once, and a worker trains it with the same `train(...)` call the
sequential path makes (same recipe, seed, run name, tags and parent run). A job's recipe and seed
fix its result, whichever worker trains it and in whatever order: a fresh process trains the
same weights as one that trained other jobs before.

A job list with `--workers N` (`run_jobs`):

- the parent process is the chief: it serves the oracle over gRPC on 127.0.0.1 from a thread,
  and trains jobs itself, asking the same oracle (a second core costs no extra process);
- N - 1 worker processes (`tuner1` ...) ask it for jobs over gRPC. A `WorkerPool` can start
  them before the jobs are known: they import TensorFlow (seconds) while the parent validates
  the grid and opens its MLflow run, then wait for the job file;
- workers write to the MLflow store directly, SQLite included (the parent creates it first).

Workers write `<index>.started`, `<index>.result.json` or `<index>.error.json` beside the job
file; the parent reads them for its progress lines and results. A job that raises a `ZooError`
stops the whole run with its message (the parent's own training stops after its current epoch);
Ctrl-C or SIGTERM in the parent stops every worker, whose runs end KILLED. A worker killed by a
signal from elsewhere (SIGKILL, the OOM killer, a crash) is started again under its tuner id
(`Restarts`): the oracle gives it back its trial, which resumes from its last backup.

`zoo tune --workers N` (`run_processes`) starts Keras Tuner's chief as a process of its own and N
workers. A search across machines (docs/experiments.md, "Across machines") runs `zoo tune` on
each with Keras Tuner's variables set: the chief serves its oracle with `serve_until_done`, the
others join it (`zoo.workflows.tune.join`). A job list served at KERASTUNER_ORACLE_IP:PORT
(`shared_address`) carries its jobs in its oracle's space; `zoo join` elsewhere trains them and
leaves each result and model file on the job's MLflow run, where the chief finds them
(`joined_result`) by the job's tag.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ArgumentError, ZooError
from zoo.files import write_text_atomically
from zoo.training.execution import side_by_side_environment, train_side_by_side

if TYPE_CHECKING:  # the recipe schema imports TensorFlow: not before the workers start
    from zoo.recipe import Recipe

PARENT_ENVIRONMENT = "ZOO_WORKER_PARENT"  # set for the processes started here
STOP_SECONDS = 60  # a stopped worker finishes its batch and marks its run KILLED within this
POLL_SECONDS = 0.5
SPEC_POLL_SECONDS = 0.05  # a waiting worker looks for its job file this often
END_POLL_SECONDS = 0.1  # the parent, done with its own jobs, looks for the last results
OBJECTIVE = "test_accuracy"  # only recorded in the oracle: nothing is chosen by it
JOBS_HP = "zoo.jobs"  # a shared job list's jobs, as JSON, in its oracle's space (`zoo join`)
JOB_TAG = "zoo.job"  # "<list id>/<index>" on the runs of a shared job list
RESULT_ARTIFACTS = "zoo-result"  # a joined worker's result and model file, on the job's run
# A worker killed by a signal (SIGKILL, the OOM killer, a crash) is started again under its
# tuner id this many times: Keras Tuner's oracle gives a returning tuner id its unfinished
# trial, and the trial's backup resumes it into the same MLflow run.
RESTARTS = 2


def oracle_address(command: str) -> tuple[str, int]:
    """KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (Keras Tuner's own variables), checked.

    Raises:
        ArgumentError: the port is missing or not a number.
    """
    port = os.environ.get("KERASTUNER_ORACLE_PORT", "")
    if not port.isdigit():
        raise ArgumentError(f"{command}: KERASTUNER_ORACLE_PORT must be a port number (received "
                            f"{port!r}), e.g. 8000; it goes with KERASTUNER_ORACLE_IP")
    return os.environ["KERASTUNER_ORACLE_IP"], int(port)


def shared_address(command: str) -> tuple[str, int] | None:
    """Where a grid or a zoo build serves its jobs to workers on other machines (`zoo join`):
    KERASTUNER_ORACLE_IP:PORT when set, this process being the chief; None serves them on
    127.0.0.1 to this machine's workers only.

    Raises:
        ArgumentError: a bad port, or a KERASTUNER_TUNER_ID that is not the chief's.
    """
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return None
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "chief")
    if "chief" not in tuner_id:
        raise ArgumentError(f"{command}: KERASTUNER_TUNER_ID={tuner_id} is a worker's id; a "
                            "worker joins with `zoo join`, the chief (this command) runs with "
                            "KERASTUNER_TUNER_ID=chief or unset")
    return oracle_address(command)


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
        role: the hidden subcommand and its arguments (`["tune-role", "recipe.yaml", ...]`).
        workers: worker processes besides the chief.
        name: what runs, for messages.
        track: the workers log to MLflow.
        poll: called about twice a second while waiting (progress; it may raise to stop).

    Raises:
        ZooError: a worker or the chief failed.
    """
    from zoo import server

    _create_sqlite_store_first(track)
    with _worker_store(track) as worker_uri:
        env = _worker_environment(worker_uri, server.free_port())
        processes: dict[str, subprocess.Popen] = {}
        module_and_args = ["zoo.cli", *role]
        try:
            # Workers need not wait for the chief: their gRPC calls wait until it listens.
            _spawn(module_and_args, ["chief", *(f"tuner{i}" for i in range(workers))], env,
                   processes)
            _wait(processes, name, poll, Restarts(module_and_args, env))
        finally:
            _stop(processes)


def _create_sqlite_store_first(track: bool) -> None:
    """Create and migrate a SQLite store here, once: workers that open a new SQLite store
    together both try to migrate its schema, and one of them fails."""
    from zoo import tracking

    if track and tracking.tracking_uri().startswith("sqlite:"):
        tracking.client()


@contextlib.contextmanager
def _worker_store(track: bool, workers: int = 1) -> Iterator[str]:
    """The tracking URI the workers log to. They write to the store directly, SQLite included:
    SQLite serializes the few small writes a run makes (metrics go in batches every few
    seconds), and the parent creates a new store first (`_create_sqlite_store_first`). A
    temporary server in between cost 6 s of start-up, as much as a short job. Other local
    stores (file:) still get one, for as long as the block runs."""
    from zoo import server, tracking

    uri = tracking.tracking_uri()
    if not track or workers == 0 or uri.startswith(
            ("sqlite:", "http://", "https://", "postgresql")):
        yield uri
    else:
        with server.local_server_if_needed(uri) as server_uri:
            yield server_uri


def _worker_environment(uri: str, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """The environment of the processes `_spawn` starts: the store, the chief's address."""
    return {**os.environ, **side_by_side_environment(), "MLFLOW_TRACKING_URI": uri,
            "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port),
            PARENT_ENVIRONMENT: str(os.getpid()),
            # Links to a temporary server on every run's end are no use to anyone.
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": os.environ.get(
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")}


def _spawn(module_and_args: Sequence[str], tuner_ids: Sequence[str], env: dict[str, str],
           processes: dict[str, subprocess.Popen]) -> None:
    """Start `python -m <module_and_args>` once per tuner id, into `processes`."""
    for tuner_id in tuner_ids:
        # A session of their own: a terminal's Ctrl-C reaches the parent only, which then
        # stops each process with exactly one SIGTERM (a second signal would abort a worker
        # at once, maybe before it marks its run KILLED).
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", *module_and_args],
            env={**env, "KERASTUNER_TUNER_ID": tuner_id}, start_new_session=True)


@dataclass
class Restarts:
    """Starts a worker killed by a signal again under its tuner id, up to `RESTARTS` times.

    A signal from elsewhere (SIGKILL, the OOM killer, a crash) ends a worker with a negative
    exit code; a job that failed exits 1 or 2, and a stop this process asked for is not
    watched. Keras Tuner's oracle keeps a trial given to a tuner id until that id reports it:
    the restarted worker asks again, gets the same trial, and its training resumes from its
    last backup into its MLflow run. Workers on other machines are restarted by hand, with the
    same KERASTUNER_TUNER_ID.
    """

    module_and_args: Sequence[str]
    env: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)

    def restart_killed(self, processes: dict[str, subprocess.Popen],
                       skip: Sequence[str] = ()) -> None:
        """Start again each process of `processes` (but those in `skip`) that a signal ended
        and has restarts left; the others are left for the caller to report."""
        for tuner_id, process in list(processes.items()):
            code = process.poll()
            if tuner_id in skip or code is None or code >= 0:
                continue
            done = self.counts.get(tuner_id, 0)
            if done >= RESTARTS:
                continue
            self.counts[tuner_id] = done + 1
            print(f"zoo: worker {tuner_id} was killed ({_signal_name(-code)}); starting it "
                  f"again ({done + 1}/{RESTARTS}): its trial resumes from its last backup",
                  flush=True)
            _spawn(self.module_and_args, [tuner_id], self.env, processes)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _wait(processes: dict[str, subprocess.Popen], name: str,
          poll: Callable[[], None] | None, restarts: Restarts) -> None:
    check = poll or (lambda: None)
    while True:
        check()
        chief = processes["chief"].poll()
        if chief not in (None, 0):
            raise ZooError(f"{name}: the Keras Tuner chief (the oracle server) exited with "
                           f"code {chief}; see its output above")
        restarts.restart_killed(processes, skip=("chief",))
        codes = {k: p.poll() for k, p in processes.items() if k != "chief"}
        failed = {k: c for k, c in codes.items() if c not in (None, 0)}
        if failed or all(c == 0 for c in codes.values()):
            check()  # a failed job's own message, or the last results
            if failed:
                listed = ", ".join(f"{k} (exit code {c})" for k, c in failed.items())
                raise ZooError(f"{name}: worker {listed} failed; see its output above")
            return
        time.sleep(POLL_SECONDS)


def _stop(processes: dict[str, subprocess.Popen], announce: bool = True,
          grace: float = 0) -> None:
    """SIGTERM whatever still runs, wait for it to wrap up, SIGKILL what does not.

    Args:
        announce: say which workers are stopped (not when they had nothing left to do).
        grace: seconds to wait for processes that are exiting on their own first.
    """
    deadline = time.monotonic() + grace
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    alive = {k: p for k, p in processes.items() if p.poll() is None}
    if not alive:
        return
    busy = [k for k in alive if k != "chief"]  # after a normal end only the chief is left
    if busy and announce:
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
        """Train the job in this process, quietly; returns the `zoo.training.Result`."""
        from zoo.training.trainer import train

        return train(self.recipe, track=self.track, verbose=0, model_dir=self.model_dir,
                     run_name=self.run_name, parent_run_id=self.parent_run_id,
                     tags=self.tags or None)

    def to_json(self) -> dict[str, Any]:
        """The job as JSON data, which a worker process reads back with `from_json`."""
        return {"recipe": self.recipe.resolved(),
                "source": str(self.recipe.source) if self.recipe.source else None,
                "label": self.label, "run_name": self.run_name,
                "parent_run_id": self.parent_run_id, "tags": self.tags, "track": self.track,
                "model_dir": str(self.model_dir) if self.model_dir else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """The job `to_json` wrote, its recipe validated again with the same source file."""
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
    """What the parent needs of a finished job (a `zoo.training.Result` without the model, unless
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
        """The parts of a `zoo.training.Result` the parent needs; the model only with
        `keep_model`."""
        return cls(result.test_accuracy, result.test_loss, result.weights_sha256,
                   Path(result.model_path), result.epochs, result.seconds, result.run_id,
                   result.history, result.model if keep_model else None)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON data, without the model: what a worker writes for the parent."""
        return {"test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                "weights_sha256": self.weights_sha256, "model_path": str(self.model_path),
                "epochs": self.epochs, "seconds": self.seconds, "run_id": self.run_id,
                "history": self.history}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        """The result `to_json` wrote; `load_model` reads its model from its file."""
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
             on_done: Callable[[int, JobResult], None] | None = None,
             pool: WorkerPool | None = None,
             address: tuple[str, int] | None = None) -> list[JobResult]:
    """Train every job; 1 worker trains them here in order, N > 1 here and in N - 1 worker
    processes; with an `address`, workers on other machines may join (`join`).

    Args:
        jobs: the jobs; a job's index in this list is its trial number.
        workers: from `pick_workers`.
        name: what runs, for messages.
        on_start: called with a job's index when it starts (in this process).
        on_done: called with a job's index and result when it finishes (in this process).
        pool: worker processes started earlier (`WorkerPool.started`); None starts
            `workers - 1` now.
        address: (host, port) to serve the jobs on to workers elsewhere (`shared_address`),
            if `pool` is None.

    Returns:
        The results, in the order of `jobs`.

    Raises:
        ZooError: a job failed (the first failure's message; the other workers are stopped).
    """
    shared = address is not None or (pool is not None and pool.shared)
    if not jobs:
        return []
    if not shared and (workers <= 1 or len(jobs) <= 1):
        results = []
        for index, job in enumerate(jobs):
            if on_start:
                on_start(index)
            results.append(JobResult.of(job.train(), keep_model=True))
            if on_done:
                on_done(index, results[index])
        return results
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(WorkerPool.started(
                max(1, min(workers, len(jobs))) - 1, track=any(job.track for job in jobs),
                address=address))
        return _Shared(jobs, pool, name, on_start, on_done).run()


@dataclass
class WorkerPool:
    """Worker processes for `run_jobs`, started before their jobs are known: each imports what
    training needs, then waits for the job file the parent writes into `folder`."""

    folder: Path
    port: int  # of the oracle server the parent will run
    processes: dict[str, subprocess.Popen]
    finished: bool = False  # every job of the pool's job list has its result
    server: Any = None  # the oracle's gRPC server, from `serve` until the workers are gone
    restarts: Restarts | None = None  # starts a killed worker again
    host: str = "127.0.0.1"  # the oracle's address
    shared: bool = False  # served to workers on other machines too (`join`)

    @property
    def spec(self) -> Path:
        """The job file the parent writes into `folder` for the waiting workers."""
        return self.folder / "jobs.json"

    def serve(self, oracle) -> None:
        """Answer the workers' requests to `oracle` from a thread of this process, until the
        pool closes: a worker that finished its last job still asks for another (and is told
        there is none) before it exits."""
        self.server = _serve(oracle, self.port, self.host)

    @classmethod
    @contextlib.contextmanager
    def started(cls, count: int, *, track: bool = True,
                address: tuple[str, int] | None = None) -> Iterator[WorkerPool]:
        """Start `count` workers (0: none, the parent trains alone); stop them on leaving.

        Args:
            track: the jobs log to MLflow.
            address: (host, port) to serve the oracle on to workers elsewhere too; None
                serves it on 127.0.0.1 to this machine's workers only.
        """
        from zoo import server

        folder = Path(tempfile.mkdtemp(prefix="zoo-jobs-"))
        (folder / "results").mkdir()
        try:
            with _worker_store(track, count) as worker_uri:
                host, port = address or ("127.0.0.1", server.free_port())
                pool = cls(folder, port, {}, host=host, shared=address is not None)
                module_and_args = ["zoo.cli", "jobs-role", str(pool.spec)]
                # This machine's workers reach an oracle on every interface at 127.0.0.1.
                env = _worker_environment(worker_uri, pool.port,
                                          "127.0.0.1" if host in ("0.0.0.0", "::") else host)
                pool.restarts = Restarts(module_and_args, env)
                try:
                    _spawn(module_and_args, [f"tuner{i}" for i in range(1, count + 1)], env,
                           pool.processes)
                    yield pool
                finally:
                    # Before a temporary MLflow server goes. Workers still waiting for a job
                    # file that never came (a grid that failed its checks, nothing left to run)
                    # have nothing to stop, and those of a finished job list are exiting: no
                    # message for them, and the latter may finish on their own.
                    _stop(pool.processes, announce=pool.spec.exists() and not pool.finished,
                          grace=STOP_SECONDS if pool.finished else 0)
                    if pool.server is not None:
                        pool.server.stop(grace=None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class _Shared:
    """One `run_jobs` over a pool: the oracle served from a thread, this process's own share
    of the jobs, and a watcher thread that reports the workers' results and failures."""

    def __init__(self, jobs: Sequence[Job], pool: WorkerPool, name: str,
                 on_start: Callable[[int], None] | None,
                 on_done: Callable[[int, JobResult], None] | None):
        self.jobs, self.pool, self.name = jobs, pool, name
        self.on_start, self.on_done = on_start, on_done
        self.results: list[JobResult | None] = [None] * len(jobs)
        self.started: set[int] = set()
        self.error: ZooError | None = None  # the first failure, raised in this thread
        self.lock = threading.Lock()  # callbacks come from this thread and the watcher
        self.finished = threading.Event()
        self.oracle = None  # the oracle served, once `run` made it

    def run(self) -> list[JobResult]:
        if self.pool.processes:  # workers on this machine: this process trains beside them
            train_side_by_side()
        # Keras Tuner's variables, set for workers elsewhere, name this process's oracle; its
        # own tuner must not read them (as `chief` it would only serve, never train).
        with _without_oracle_variables():
            return self._run()

    def _run(self) -> list[JobResult]:
        from zoo import interrupt

        if self.pool.shared:
            self._share()
        _create_sqlite_store_first(any(job.track for job in self.jobs))
        write_text_atomically(self.pool.spec, json.dumps(
            {"jobs": [job.to_json() for job in self.jobs]}))
        from zoo.workflows.job_tuner import Failed, job_tuner

        tuner = job_tuner(self.jobs, self.pool.folder, local=self, publish=self.pool.shared)
        self.oracle = tuner.oracle
        self.pool.serve(tuner.oracle)
        if self.pool.shared:
            print(f"zoo: serving {len(self.jobs)} jobs on {self.pool.host}:{self.pool.port}; "
                  "on other machines run `zoo join` with MLFLOW_TRACKING_URI="
                  f"{_tracking_uri()}, KERASTUNER_ORACLE_IP=<this machine>, "
                  f"KERASTUNER_ORACLE_PORT={self.pool.port} and KERASTUNER_TUNER_ID=worker1, "
                  "worker2, ...", flush=True)
        watcher = threading.Thread(target=self._watch, name="zoo-jobs-watcher", daemon=True)
        watcher.start()
        try:
            try:
                tuner.search(verbose=0)  # this process's share of the jobs
            except Failed as failed:  # one of them: its own error, as the sequential path
                raise failed.error from None
            except KeyboardInterrupt:
                if self.error is None:
                    raise
                # Stopped because a worker's job failed: that failure is the error to report.
            self._raise_error()
            # The workers' last results; they exit on their own once the oracle has no job
            # left for them, and the pool stops whatever has not by the time it closes. Workers
            # on other machines are waited for (one killed is started again by hand).
            while True:
                self._collect()
                self._raise_error()
                if all(r is not None for r in self.results) or (
                        self._workers_done() and not self.pool.shared):
                    break
                time.sleep(END_POLL_SECONDS)
            self.pool.finished = all(r is not None for r in self.results)
        finally:
            self.finished.set()
            watcher.join()
            interrupt.cancel_stop()
        missing = [self.jobs[i].label for i, result in enumerate(self.results) if result is None]
        if missing:
            raise JobError(f"{self.name}: the workers ended without a result for "
                           f"{', '.join(missing)}")
        return self.results  # type: ignore[return-value]

    # -- this process's own jobs (called by the local JobTuner)
    def train_here(self, index: int) -> JobResult:
        self._raise_error()
        self._report_start(index)
        result = JobResult.of(self.jobs[index].train(), keep_model=True)
        self._report_done(index, result)
        return result

    # -- the workers'
    def _watch(self) -> None:
        from zoo import interrupt

        while not self.finished.wait(POLL_SECONDS):
            try:
                self._collect()
                self._check_workers()
            except ZooError as err:
                with self.lock:
                    if self.error is None:
                        self.error = err
                interrupt.request_stop()
                return

    def _collect(self) -> None:
        out = self.pool.folder / "results"
        for path in sorted(out.glob("*.error.json")):
            raise JobError(json.loads(path.read_text())["message"])
        for path in sorted(out.glob("*.started"), key=_index):
            self._report_start(_index(path))
        for path in sorted(out.glob("*.result.json"), key=_index):
            index = _index(path)
            if self.results[index] is None:
                self._report_done(index, JobResult.from_json(json.loads(path.read_text())))
        if self.pool.shared and self.oracle is not None:
            self._collect_joined(out)

    # -- workers on other machines (`join`)
    def _share(self) -> None:
        """Tag each job's run so that its result can be found in the shared store."""
        import dataclasses
        import uuid

        untracked = [job.label for job in self.jobs if not job.track]
        if untracked:
            raise ArgumentError(f"{self.name}: workers on other machines report through the "
                                "MLflow tracking server, so a shared job list must be tracked "
                                "(drop --no-track)")
        # The results of joined workers are downloaded as they come: no progress bars.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        list_id = uuid.uuid4().hex[:12]
        self.jobs = [dataclasses.replace(job, tags={**job.tags, JOB_TAG: f"{list_id}/{i}"})
                     for i, job in enumerate(self.jobs)]

    def _collect_joined(self, out: Path) -> None:
        """The jobs that workers elsewhere started or finished, as the oracle has them."""
        for trial in list(self.oracle.trials.values()):
            index = trial.hyperparameters.values.get("job")
            if index is None:
                continue
            index = int(index)
            if trial.status == "RUNNING":
                self._report_start(index)
            elif trial.status in ("FAILED", "INVALID") and self.results[index] is None:
                # Only a joined worker ends a trial so (`JobTuner._failed_for_the_chief`).
                raise JobError(f"{self.name}: {self.jobs[index].label} failed on a worker that "
                               "joined from elsewhere; its message is in that worker's output "
                               "and its MLflow run")
            elif (trial.status == "COMPLETED" and self.results[index] is None
                  and not (out / f"{index}.result.json").exists()):
                result = joined_result(self.jobs[index])
                if result is not None:
                    self._report_start(index)
                    self._report_done(index, result)

    def _report_start(self, index: int) -> None:
        with self.lock:
            if index in self.started:
                return
            self.started.add(index)
            if self.on_start:
                self.on_start(index)

    def _report_done(self, index: int, result: JobResult) -> None:
        with self.lock:
            if self.results[index] is not None:
                return
            self.results[index] = result
            if self.on_done:
                self.on_done(index, result)

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _check_workers(self) -> None:
        """Start again the workers a signal killed; raise for one that failed."""
        with self.lock:  # the watcher and the end of `run` both look
            if self.pool.restarts is not None:
                self.pool.restarts.restart_killed(self.pool.processes)
            failed = {k: p.returncode for k, p in self.pool.processes.items()
                      if p.poll() not in (None, 0)}
        if failed and self.error is None:
            listed = ", ".join(f"{k} (exit code {c})" for k, c in failed.items())
            raise JobError(f"{self.name}: worker {listed} failed; see its output above")

    def _workers_done(self) -> bool:
        self._check_workers()  # a killed worker started again is not done
        return all(p.poll() is not None for p in self.pool.processes.values())


ORACLE_VARIABLES = ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")


@contextlib.contextmanager
def _without_oracle_variables() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in ORACLE_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _tracking_uri() -> str:
    from zoo import tracking

    return tracking.tracking_uri()


def publish_result(result: JobResult) -> None:
    """From a worker that joined from elsewhere: the job's result and model file as artifacts
    of its run, where the chief finds them (`joined_result`)."""
    from zoo import tracking

    with tempfile.TemporaryDirectory(prefix="zoo-result-") as tmp:
        folder = Path(tmp) / RESULT_ARTIFACTS
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps(result.to_json()))
        shutil.copyfile(result.model_path, folder / "model.keras")
        tracking.client().log_artifacts(result.run_id, str(folder), RESULT_ARTIFACTS)


def joined_result(job: Job) -> JobResult | None:
    """The result of a job a worker elsewhere trained, from its run's artifacts, its model file
    placed where this machine would have saved it; None while the run is not FINISHED."""
    import mlflow.artifacts

    from zoo import mlflow_layout as layout
    from zoo import tracking
    from zoo.files import atomic_path
    from zoo.training.trainer import model_path_for

    client = tracking.client()
    experiment = client.get_experiment_by_name(layout.experiment_for(job.recipe.data.dataset))
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id],
        f"tags.`{JOB_TAG}` = '{job.tags[JOB_TAG]}' and attributes.status = 'FINISHED'")
    if not runs:
        return None
    with tempfile.TemporaryDirectory(prefix="zoo-result-") as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(
            run_id=runs[0].info.run_id, artifact_path=RESULT_ARTIFACTS, dst_path=tmp,
            tracking_uri=tracking.tracking_uri()))
        data = json.loads((folder / "result.json").read_text())
        target = model_path_for(job.recipe, job.model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as partial:
            shutil.copyfile(folder / "model.keras", partial)
    return JobResult.from_json({**data, "model_path": str(target)})


def join() -> int:
    """`zoo join`: a worker of a grid or a zoo build served by a chief elsewhere (Keras Tuner's
    KERASTUNER_ORACLE_IP, _PORT and _TUNER_ID): train the jobs it gives out, each into its
    MLflow run, until none is left. Started again under the same KERASTUNER_TUNER_ID after a
    kill, the worker gets back the job it held, which resumes from its backup here.

    Returns:
        How many jobs this worker trained.
    """
    from keras_tuner.src.distribute.oracle_client import OracleClient

    from zoo import interrupt
    from zoo.workflows.job_tuner import job_tuner

    host, port = oracle_address("join")
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if not tuner_id or "chief" in tuner_id or re.fullmatch(r"tuner\d+", tuner_id):
        raise ArgumentError(f"join: KERASTUNER_TUNER_ID={tuner_id!r} is not a joining worker's "
                            "id; give each worker one of its own, e.g. worker1 (the chief's "
                            "has 'chief' in it, and tuner0, tuner1, ... are its own workers')")
    print(f"zoo: {tuner_id} asks the chief on {host}:{port} for its jobs ...", flush=True)
    space = OracleClient(None).get_space()  # waits until the chief serves
    published = [hp.value for hp in space.space if hp.name == JOBS_HP]
    if not published:
        raise ZooError(f"join: the chief on {host}:{port} serves a search, not a job list; join "
                       "it with `zoo tune RECIPE` and the same recipe and overrides")
    # The chief's paths are not this machine's: models go to this project's models/.
    jobs = [Job.from_json({**job, "model_dir": None}) for job in json.loads(published[0])]
    print(f"zoo: {tuner_id} joins {len(jobs)} jobs, logging to {_tracking_uri()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="zoo-join-"))
    (folder / "results").mkdir()
    try:
        interrupt.install()  # a stop ends the job's run KILLED, its backup kept
        tuner = job_tuner(jobs, folder, joined=True)
        tuner.search(verbose=0)
        return len(list((folder / "results").glob("*.result.json")))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(oracle, port: int, host: str = "127.0.0.1"):
    """Keras Tuner's oracle service on `host`:`port`, answered from a thread of this process
    (`keras_tuner`'s `oracle_chief.start_server` does the same, but blocks, and looks for the
    end of the search only every 20 s). The server has the servicer as `servicer`."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # newer gRPC raises where older returned 0
        bound = 0
    if not bound:
        raise ZooError(f"cannot serve the oracle on {host}:{port}: the address is not this "
                       "machine's or the port is taken; set KERASTUNER_ORACLE_IP and "
                       "KERASTUNER_ORACLE_PORT to a free address of this machine")
    server.start()
    server.servicer = servicer
    return server


def serve_until_done(oracle, host: str, port: int, poll: Callable[[], None] | None = None,
                     ) -> None:
    """Serve `oracle` to workers on other machines (and this one) until the search is over:
    a worker was told there is no trial left, and no worker holds one or is still to ask."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    server = _serve(oracle, port, host)
    try:
        while not (server.servicer.stop_triggered and exit_chief(oracle)):
            if poll:
                poll()
            time.sleep(POLL_SECONDS)
    finally:
        server.stop(grace=None)


def _index(path: Path) -> int:
    return int(path.name.split(".")[0])


def run_job_role(spec: Path) -> int:
    """Body of a chief or worker process of `run_jobs` (its role from KERASTUNER_TUNER_ID).

    Returns:
        The exit code: 0, 2 when a job raised a ZooError, 1 for any other failure (the parent
        reports the job's message; a traceback is printed here).
    """
    from zoo import interrupt

    # Until its jobs come, a worker has nothing to wrap up: stopped (the grid failed its
    # checks, or nothing was left to run), it leaves at once and says nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: os._exit(0))
    _warm_up()
    from zoo.workflows.job_tuner import job_tuner

    def search() -> None:
        # Ready: what is left is the parent's (tests wait for this to give a worker a share).
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "worker")
        write_text_atomically(spec.parent / f"{tuner_id}.waiting", str(os.getpid()))
        while not spec.exists():  # written once the parent has its jobs (and its MLflow run)
            time.sleep(SPEC_POLL_SECONDS)
        interrupt.install()  # from here a stop ends the job's run KILLED
        jobs = [Job.from_json(job) for job in json.loads(spec.read_text())["jobs"]]
        job_tuner(jobs, spec.parent).search(verbose=0)  # the parent prints the progress

    code = run_role(search)
    # Every run is closed and every result written (atomically): nothing is left to lose, and
    # tearing TensorFlow down properly would keep the parent waiting for a second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _warm_up() -> None:
    """What a job's first run imports (TensorFlow, MLflow and its SQL store, matplotlib: 4 s
    or more), done while the parent still prepares the jobs rather than in the first job."""
    from zoo import tracking
    from zoo.plots import pyplot
    from zoo.training import trainer  # noqa: F401

    if tracking.tracking_uri().startswith(("sqlite:", "postgresql")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow  # noqa: F401

    pyplot()


def run_role(search: Callable[[], None]) -> int:
    """Run a chief's or a worker's `search` in a process started by `run_processes`.

    Returns:
        The process's exit code.
    """
    from zoo.workflows.job_tuner import Failed

    exit_with_parent()
    try:
        search()
    except Failed as failed:
        return failed.code
    except KeyboardInterrupt:
        if os.environ.get("KERASTUNER_TUNER_ID") == "chief":
            # The parent stops the chief once the workers are done (Keras Tuner's chief checks
            # for that only every 20 s): nothing to report.
            return 130
        raise
    return 0
