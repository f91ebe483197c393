"""MLflow: the default store, one experiment per data set, run lifecycle and logging.

The default store is `sqlite:///<repo>/mlruns/mlflow.db` with artifacts under `mlruns/artifacts`;
an explicit MLFLOW_TRACKING_URI always wins. A run ends FINISHED, FAILED (an exception) or
KILLED (Ctrl-C / SIGTERM), never RUNNING.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zoo import mlflow_layout as layout
from zoo import paths
from zoo.files import exclusive

_BATCH = 100  # MLflow's limit of params or tags per log_batch call


def tracking_uri() -> str:
    """The MLflow store: MLFLOW_TRACKING_URI if set, else the SQLite database
    `mlruns/mlflow.db` under the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlruns_dir() / 'mlflow.db'}"


def local_artifact_root(uri: str) -> Path | None:
    """For a SQLite store, the `artifacts` folder beside the database; None for a server, which
    decides for itself."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts"


def _artifact_location(uri: str, experiment: str) -> str | None:
    root = local_artifact_root(uri)
    if root is None:
        return None
    return (root / experiment.replace(":", "_").replace("/", "_")).as_uri()


def client():
    """An MlflowClient on the zoo's store; quiet about its one-time database migrations."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return client_for(uri)


@functools.lru_cache(maxsize=8)
def client_for(uri: str):
    """An MlflowClient on the store at `uri`, its schema created if new; one per store and
    process: opening a SQLite store checks its schema, 0.2 s a time.

    A SQLite store's schema is created (or migrated) by one process at a time, under a lock
    file beside the database: MLflow's migrations, run by several processes on a new store at
    once, fail in each of them (`table _alembic_tmp_... already exists`).
    """
    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(database.with_name(database.name + ".lock")):
        mlflow_client = MlflowClient(uri)
        mlflow_client.search_experiments(max_results=1)  # the store is open: its schema ready
    return mlflow_client


def ensure_experiment(mlflow_client, name: str) -> str:
    """The id of experiment `name`, created (with the model-development tag) if missing."""
    from mlflow.exceptions import MlflowException

    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return mlflow_client.create_experiment(
            name, artifact_location=_artifact_location(tracking_uri(), name),
            tags=layout.EXPERIMENT_KIND,
        )
    except MlflowException:  # created meanwhile by a concurrent writer
        return mlflow_client.get_experiment_by_name(name).experiment_id


class TrackedRun:
    """Logging into one MLflow run.

    Per-epoch metrics are buffered and sent in one batch every few seconds, by a thread of the
    run's own: a batch costs MLflow's SQL store about 0.2 ms a value (a monitored run logs
    thousands). Sent from the training thread it would stall training that long; from its own
    thread it runs while TensorFlow trains the next epochs, which do not hold Python's lock.
    The UI still updates while a run trains. Everything else is logged at once; `close` waits
    for the batches and re-raises a failed one. MLflow's own asynchronous queue was not used:
    it adds about a second of latency when the run closes.
    """

    FLUSH_SECONDS = 5.0
    # Below MLflow's 1000 metrics per batch. A SQLite store took 0.27 s for 4,000 metrics in
    # batches of 300, 0.35 s in batches of 900 and 0.48 s in batches of 100, and the last batch,
    # which the run waits for as it ends, is smaller.
    _MAX_BUFFER = 300

    def __init__(self, mlflow_client, run):
        self.client = mlflow_client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self._buffer = []
        self._last_flush = time.monotonic()
        self._sender = None  # a one-thread executor, created with the first batch
        self._sent: list = []  # futures of batches not yet known to have arrived
        self._pending_artifacts: list = []  # (files still being made, artifact folder)
        # Context (training, validation, test) -> (name, digest) of the run's input data sets.
        self.datasets: dict[str, tuple[str, str]] = {}
        # A resumed run: the epochs its killed process logged, and the metric names it has.
        self._logged_through: int | None = None
        self._logged_keys: frozenset[str] = frozenset()

    def continue_after_kill(self) -> None:
        """A resumed run: what the killed process logged is not logged again (a resumed
        training recomputes those epochs from its backup, with the same values), so every
        metric keeps one value per step."""
        self._logged_through = max(
            (m.step for m in self.client.get_metric_history(self.run_id, "loss")), default=0)
        self._logged_keys = frozenset(self.client.get_run(self.run_id).data.metrics)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params now; values other than strings as JSON, cut to MLflow's 6,000 characters."""
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + _BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags now, values as text."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[start:start + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, *,
                    model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """Log now and wait (final metrics).

        Args:
            model_id: the logged model they measure (shown on its page in the Models tab).
            dataset: (name, digest) of the run input they were computed on.
        """
        metrics = {k: v for k, v in metrics.items() if k not in self._logged_keys}
        if metrics:
            self.client.log_batch(self.run_id, metrics=self._metrics(
                metrics, step, model_id=model_id, dataset=dataset))

    def log_epoch(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer one epoch's metrics; send the buffer every few seconds, in the background."""
        if self._logged_through is not None and step <= self._logged_through:
            return
        self._buffer.extend(self._metrics(metrics, step))
        if (time.monotonic() - self._last_flush > self.FLUSH_SECONDS
                or len(self._buffer) >= self._MAX_BUFFER):
            self._send_buffer()

    def _send_buffer(self) -> None:
        self._check_sent()
        if self._buffer:
            if self._sender is None:
                from concurrent.futures import ThreadPoolExecutor

                self._sender = ThreadPoolExecutor(1, thread_name_prefix="zoo-mlflow-metrics")
            batch, self._buffer = self._buffer, []
            self._sent.append(self._sender.submit(self.client.log_batch, self.run_id,
                                                  metrics=batch))
        self._last_flush = time.monotonic()

    def _check_sent(self, wait: bool = False) -> None:
        """Forget the batches that arrived; raise the error of one that failed."""
        pending = []
        for future in self._sent:
            if wait or future.done():
                future.result()
            else:
                pending.append(future)
        self._sent = pending

    def flush(self) -> None:
        """Send the buffered metrics and wait until every batch has arrived."""
        try:
            self._send_buffer()
            self._check_sent(wait=True)
        finally:
            if self._sender is not None:
                self._sender.shutdown(wait=True)
                self._sender = None

    @staticmethod
    def _metrics(metrics: Mapping[str, float], step: int, model_id: str | None = None,
                 dataset: tuple[str, str] | None = None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        return [Metric(k, float(v), now, step, model_id=model_id, dataset_name=name,
                       dataset_digest=digest) for k, v in metrics.items()]

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload the file at `path` to the run's artifacts (into folder `artifact_path`, if
        given)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts_later(self, pending, artifact_path: str | None = None) -> None:
        """Upload files that are still being made, into folder `artifact_path`, as the run
        ends. `pending` (a `zoo.plots.FiguresAside`) has `wait()`, which returns the files'
        paths, and `close()`, which stops their making and removes what is left."""
        self._pending_artifacts.append((pending, artifact_path))

    def _log_pending_artifacts(self, status: str) -> None:
        """Wait for and upload the files still being made, unless the run was stopped (KILLED:
        the user wants out). A failed run keeps them, but their own error must not hide the
        one that failed it."""
        pending, self._pending_artifacts = self._pending_artifacts, []
        try:
            for files, artifact_path in pending:
                if status == "KILLED":
                    break
                try:
                    for path in files.wait():
                        self.log_artifact(path, artifact_path)
                except Exception:
                    if status == "FINISHED":
                        raise
        finally:
            for files, _ in pending:
                files.close()

    def close(self, status: str) -> None:
        """End the run with `status` (FINISHED, FAILED or KILLED) once the files still being
        made are uploaded and the buffered metrics sent; a failed upload's or batch's error is
        raised after the run has ended."""
        try:
            try:
                self._log_pending_artifacts(status)
            finally:
                self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None,
              resume_run_id: str | None = None) -> Iterator[TrackedRun]:
    """Open a run; it ends FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM.

    Args:
        resume_run_id: reopen this run (set it RUNNING again) instead of creating one.
    """
    mlflow_client = client()
    all_tags = {k: str(v) for k, v in (tags or {}).items()}
    all_tags.update(process_tags())
    if parent_run_id:
        all_tags[layout.PARENT] = parent_run_id
    if resume_run_id:
        mlflow_client.update_run(resume_run_id, status="RUNNING")
        run = TrackedRun(mlflow_client, mlflow_client.get_run(resume_run_id))
        run.set_tags(all_tags)
    else:
        experiment_id = ensure_experiment(mlflow_client, experiment)
        # Once per process and experiment: a grid or a search starts hundreds of runs.
        swept = (tracking_uri(), experiment_id)
        if swept not in _orphans_ended:
            end_orphaned_runs(mlflow_client, experiment_id)
            _orphans_ended.add(swept)
        run = TrackedRun(mlflow_client, mlflow_client.create_run(
            experiment_id, run_name=run_name, tags=all_tags))
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        run.close(status)


def process_tags() -> dict[str, str]:
    """What identifies this process to a later one: its host, pid and start time."""
    return {layout.HOST: socket.gethostname(), layout.PROCESS: _process_id(os.getpid()) or ""}


def _process_id(pid: int) -> str | None:
    """`<pid>:<start time in clock ticks since boot>` of a live process, None if there is none
    (or no /proc to tell its start time by)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


_orphans_ended: set[tuple[str, str]] = set()  # (store, experiment) this process has swept


def end_orphaned_runs(mlflow_client, experiment_id: str) -> list[str]:
    """Mark KILLED the runs of the experiment left RUNNING by a process of this host that is
    gone (killed with SIGKILL, or by a power cut); returns their ids. Runs of other hosts, and
    of processes that cannot be told apart, are left as they are."""
    host = socket.gethostname()
    orphaned = []
    for run in mlflow_client.search_runs(
            [experiment_id], max_results=1000,
            filter_string=f"attributes.status = 'RUNNING' and tags.`{layout.HOST}` = '{host}'"):
        recorded = run.data.tags.get(layout.PROCESS, "")
        pid = recorded.split(":")[0]
        if not pid.isdigit() or _process_id(int(pid)) == recorded:
            continue  # alive (or not the zoo's to judge)
        mlflow_client.set_tag(run.info.run_id, layout.ENDED_BY,
                              f"process {pid} on {host} ended without closing the run")
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
        orphaned.append(run.info.run_id)
    return orphaned


def find_run(mlflow_client, run_id: str):
    """The run of that id, or None when the store has none (deleted runs included); other
    failures (an unreachable store, ...) raise as they are."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def child_runs(mlflow_client, parent_run_id: str) -> list:
    """Every run nested under `parent_run_id` (tuning trials, ablation cells), any status."""
    experiment_id = mlflow_client.get_run(parent_run_id).info.experiment_id
    return mlflow_client.search_runs(
        [experiment_id], max_results=5000,
        filter_string=f"tags.{layout.PARENT} = '{parent_run_id}'")


def environment_tags() -> dict[str, str]:
    """Git commit, package versions and device: what is needed to say where a result came from;
    with MLflow's standard user and git tags, which its UI shows."""
    import keras
    import mlflow
    import numpy
    import tensorflow as tf

    versions = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "mlflow": mlflow.__version__,
        "numpy": numpy.__version__,
    }
    gpus = tf.config.list_physical_devices("GPU")
    device = ", ".join(g.name for g in gpus) if gpus else f"CPU ({os.cpu_count()} cores)"
    commit = git_commit()
    standard = {layout.USER: _user(), layout.SOURCE_TYPE: "LOCAL"}
    if commit != "unknown":
        standard[layout.SOURCE_GIT_COMMIT] = commit.removesuffix("-dirty")
        standard.update({tag: value for tag, value in (
            (layout.SOURCE_GIT_BRANCH, _git("rev-parse", "--abbrev-ref", "HEAD")),
            (layout.SOURCE_GIT_REPO_URL, _without_credentials(
                _git("config", "--get", "remote.origin.url"))),
        ) if value and value != "HEAD"})
    return {
        **standard,
        layout.GIT_COMMIT: commit,
        layout.VERSIONS: json.dumps(versions, sort_keys=True),
        layout.DEVICE: device,
        layout.CPU: cpu_model(),
        layout.PLATFORM: platform.platform(),
    }


def cpu_model() -> str:
    """The CPU's model name: results are reproducible on one CPU model, not across them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """HEAD of the checkout, with `-dirty` when tracked files have uncommitted changes."""
    head = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if not head or dirty is None:
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _git(*args: str) -> str | None:
    """What `git ARGS` prints in the project's checkout, stripped; None if git fails."""
    return _git_in(str(paths.project_root()), *args)


@functools.lru_cache(maxsize=32)
def _git_in(root: str, *args: str) -> str | None:
    # Asked once per process and checkout: a process runs the code it started with, and a
    # search or a grid starts hundreds of runs.
    try:
        return subprocess.run(["git", "-C", root, *args],
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _without_credentials(url: str | None) -> str | None:
    """A remote's URL without the user and password (or token) it may carry."""
    return re.sub(r"(?<=//)[^/@]+@", "", url) if url else url


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "unknown"


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's limit of a param value
