"""The team setup at scale (`make test-scale`): a real PostgreSQL, the MLflow tracking server on
it, a search of 8 trials with 3 workers and a grid of 8 cells with 2 workers logging to it, one
worker SIGKILLed in the middle of a trial in each; then a search, a grid and a zoo build across
"machines" (a chief and workers started by hand, each in a project folder of its own, as
docs/experiments.md says), a worker killed and started again by hand.

Every trial and cell must be recorded exactly once, FINISHED, with one value per epoch of each
per-epoch metric; everything started must be stopped at the end, nothing left listening.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import requires_postgres
from zoo import mlflow_layout as layout
from zoo import postgres
from zoo.server import free_port, server_command, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]
RECIPE = "mnist1d/mlp"
EPOCHS = 12
# Long enough that a kill lands mid-trial after a backup, short enough for CI: 0.25 s an epoch
# on an AMD EPYC of 2024, where 256-wide layers took 0.11 s and a whole trial ended between two
# looks of `_kill_mid_trial`.
TRAINING = [f"training.epochs={EPOCHS}", "model.widths=[1024,1024]"]
# The last epoch a kill may follow: a kill while a finished run cleans up its backups is another
# case (the run trains again from the start) than the resume these tests are about.
LAST_EPOCH_TO_KILL = EPOCHS - 3
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")

pytestmark = [pytest.mark.scale, requires_postgres]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Team:
    """PostgreSQL and the tracking server on it, and the ports opened on the way."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cluster = postgres.Cluster(folder / "postgres", port=free_port())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen | None = None
        self.ports = [self.cluster.port, self.port]  # checked closed at the end

    def start(self) -> None:
        uri = postgres.start(self.cluster)
        self.server = subprocess.Popen(
            server_command(uri, "127.0.0.1", self.port, workers=2),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "ZOO_HOME": str(self.folder)})  # artifacts under build/
        wait_until_healthy(self.url, self.server)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=60)
        postgres.stop(self.cluster)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.url)

    def home(self, name: str) -> Path:
        """A project folder of its own (a machine's checkout): recipes, models, tuning/."""
        home = self.folder / name
        if not home.exists():
            shutil.copytree(REPO / "recipes", home / "recipes")
        return home

    def zoo(self, argv: list[str], home: Path, log: str, **env: str) -> subprocess.Popen:
        """`zoo <argv>` as a process of its own against the server, its output in `log`."""
        out = open(self.folder / log, "w")  # noqa: SIM115 (closed by the process's end)
        return subprocess.Popen(
            [sys.executable, "-m", "zoo.cli", *argv], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": self.url, "ZOO_HOME": str(home), **env})

    def output(self, log: str) -> str:
        return (self.folder / log).read_text()


@pytest.fixture(scope="module")
def team():
    # Not under pytest's tmp_path, which other users cannot enter: as root, PostgreSQL runs as
    # the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="zoo-test-scale-"))
    folder.chmod(0o755)
    team = Team(folder)
    try:
        team.start()
        yield team
    finally:
        team.stop()
        shutil.rmtree(folder, ignore_errors=True)
    still = [port for port in team.ports if _listening(port)]
    assert not still, f"still listening on 127.0.0.1:{still}"


def _children(client, parent_id: str) -> list:
    from zoo.tracking import child_runs

    return child_runs(client, parent_id)


def _workers_of(parent: subprocess.Popen) -> dict[str, int]:
    """The worker processes `parent` started: tuner id -> pid (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        variables = dict(v.decode(errors="replace").split("=", 1) for v in environ if b"=" in v)
        if (variables.get("ZOO_WORKER_PARENT") == str(parent.pid)
                and int(stat.rsplit(")", 1)[1].split()[1]) == parent.pid):
            found[variables.get("KERASTUNER_TUNER_ID", "?")] = int(entry.name)
    return found


def _kill_mid_trial(team: Team, pid: int, home: Path, seconds: float = 240) -> str:
    """SIGKILL `pid` once one of its runs is training and has written a backup; returns that
    run's id."""
    client, deadline = team.client(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        for run in client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                f"attributes.status = 'RUNNING' and tags.`{layout.PROCESS}` LIKE '{pid}:%'"):
            # The run's backups: beside its model file, named after its seed and fingerprint.
            tags = run.data.tags
            name = f"seed{tags[layout.SEED]}-{tags[layout.FINGERPRINT][:12]}.backup"
            epochs = [int(path.stem.split("-")[1])
                      for path in (home / "models").rglob(f"{name}/epoch-*.json")]
            if epochs and max(epochs) <= LAST_EPOCH_TO_KILL:
                os.kill(pid, signal.SIGKILL)
                return run.info.run_id
        time.sleep(0.2)
    raise AssertionError(f"worker {pid} never trained a backed-up epoch in {seconds} s")


def _wait(process: subprocess.Popen, team: Team, log: str, seconds: float = 600) -> None:
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{log} still running after {seconds} s:\n"
                             f"{team.output(log)[-3000:]}") from None
    assert code == 0, team.output(log)[-3000:]


def _assert_recorded_once(team: Team, log: str, parent_id: str, expected: int,
                          *keys: str) -> list:
    """Each of `expected` children (told apart by the tags `keys`) once, FINISHED, with one
    value per epoch of every per-epoch metric; returns the runs."""
    client = team.client()
    runs = _children(client, parent_id)
    statuses = Counter(run.info.status for run in runs)
    assert statuses == {"FINISHED": expected}, (statuses, team.output(log)[-6000:])
    keys = Counter(tuple(run.data.tags.get(key) for key in keys) for run in runs)
    assert len(keys) == expected and set(keys.values()) == {1}, keys
    for run in runs:
        for name in EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.info.run_name, name, steps)
        assert "test_accuracy" in run.data.metrics
    return runs


def _survive_a_killed_worker(team: Team, argv: list[str], home: Path, log: str) -> str:
    """Run `zoo <argv>` with workers, SIGKILL its tuner1 mid-trial, see it started again and the
    command succeed; returns the killed run's id."""
    command = team.zoo(argv, home, log)
    deadline = time.monotonic() + 120
    while "tuner1" not in (workers := _workers_of(command)) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed_run = _kill_mid_trial(team, workers["tuner1"], home)
    _wait(command, team, log)
    output = team.output(log)
    assert "worker tuner1 was killed (SIGKILL); starting it again" in output, output[-3000:]
    return killed_run


def _newest_parent(team: Team, name_filter: str):
    """The newest run of the mnist1d experiment whose name matches `name_filter`."""
    client = team.client()
    return client.search_runs([client.get_experiment_by_name("mnist1d").experiment_id],
                              f"attributes.run_name {name_filter}",
                              order_by=["attributes.start_time DESC"])[0]


def test_a_search_of_8_trials_with_3_workers_survives_a_killed_worker(team):
    started = time.monotonic()
    killed_run = _survive_a_killed_worker(
        team, ["tune", RECIPE, *TRAINING, "tune.max_trials=8", "--workers", "3"],
        team.home("search"), "search.log")
    parent = _newest_parent(team, f"= 'tune {RECIPE}'")
    runs = _assert_recorded_once(team, "search.log", parent.info.run_id, 8,
                                 layout.TRIAL_ID)
    # The killed trial resumed into its own run: FINISHED, its epochs once each.
    assert killed_run in {run.info.run_id for run in runs}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_finished"] == 8
    print(f"search: 8 trials, {len(runs) * len(EPOCH_METRICS) * EPOCHS} epoch values, "
          f"tuner1 killed and resumed, {time.monotonic() - started:.0f} s")


def test_a_grid_of_8_cells_with_2_workers_survives_a_killed_worker(team):
    started = time.monotonic()
    killed_run = _survive_a_killed_worker(
        team, ["ablate", RECIPE, *TRAINING, "--axis", "model.dropout=0,0.3",
               "--axis", "regularization.l2=0,0.0001", "--seeds", "2", "--workers", "2"],
        team.home("grid"), "grid.log")
    parent = _newest_parent(team, f"LIKE 'ablate {RECIPE}%'")
    runs = _assert_recorded_once(team, "grid.log", parent.info.run_id, 8, layout.CELL,
                                 layout.SEED)
    assert killed_run in {run.info.run_id for run in runs}
    print(f"grid: 8 cells, tuner1 killed and resumed, {time.monotonic() - started:.0f} s")


def test_a_search_across_machines_started_by_hand(team):
    """The steps of docs/experiments.md ("Across machines"), each "machine" a project folder of
    its own on 127.0.0.1: the chief, two workers, one of them killed and started again by hand
    under its tuner id."""
    port = free_port()
    team.ports.append(port)
    shared = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    argv = ["tune", RECIPE, *TRAINING, "tune.max_trials=4", "tune.seed=7"]
    chief = team.zoo(argv, team.home("machine-a"), "chief.log",
                     KERASTUNER_TUNER_ID="chief", **shared)
    workers = {name: team.zoo(argv, team.home(f"machine-{name}"), f"{name}.log",
                              KERASTUNER_TUNER_ID=name, **shared)
               for name in ("tuner0", "tuner1")}
    killed_run = _kill_mid_trial(team, workers["tuner1"].pid, team.home("machine-tuner1"))
    workers["tuner1"].wait(timeout=30)
    again = team.zoo(argv, team.home("machine-tuner1"), "tuner1-again.log",
                     KERASTUNER_TUNER_ID="tuner1", **shared)
    for name, process in [*workers.items(), ("tuner1-again", again)]:
        if name != "tuner1":
            _wait(process, team, f"{name}.log")
    _wait(chief, team, "chief.log")
    assert "tuned recipe" in team.output("chief.log")
    assert "joins the search" in team.output("tuner0.log")
    parent = _newest_parent(team, f"= 'tune {RECIPE}'")
    runs = _assert_recorded_once(team, "chief.log", parent.info.run_id, 4, layout.TRIAL_ID)
    assert killed_run in {run.info.run_id for run in runs}
    processes = {run.data.tags[layout.PROCESS] for run in runs}
    assert len(processes) >= 2, "the trials should have been shared between the workers"


def test_a_grid_across_machines_started_by_hand(team):
    """A grid served to workers elsewhere (docs/experiments.md, "Across machines"): the chief
    `zoo ablate` with the oracle's address, two `zoo join` in project folders of their own, one
    killed and started again by hand; the chief gets every result, remote models included."""
    import keras

    from zoo.training.model_files import weights_sha256

    port = free_port()
    team.ports.append(port)
    shared = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    chief_home = team.home("grid-chief")
    chief = team.zoo(["ablate", RECIPE, *TRAINING, "--axis",
                      "model.dropout=0,0.2,0.4", "--seeds", "2", "--workers", "1"],
                     chief_home, "grid-chief.log", **shared)
    joined = {name: team.zoo(["join"], team.home(f"grid-{name}"), f"grid-{name}.log",
                             KERASTUNER_TUNER_ID=name, **shared)
              for name in ("worker1", "worker2")}
    killed_run = _kill_mid_trial(team, joined["worker2"].pid, team.home("grid-worker2"))
    joined["worker2"].wait(timeout=30)
    again = team.zoo(["join"], team.home("grid-worker2"), "grid-worker2-again.log",
                     KERASTUNER_TUNER_ID="worker2", **shared)
    for name, process in (("grid-worker1", joined["worker1"]), ("grid-worker2-again", again),
                          ("grid-chief", chief)):
        _wait(process, team, f"{name}.log")
    output = team.output("grid-chief.log")
    assert "[6/6]" in output and "serving 6 jobs on 127.0.0.1" in output, output[-3000:]
    client = team.client()
    parent = _newest_parent(team, f"= 'ablate {RECIPE}'")
    runs = _assert_recorded_once(team, "grid-chief.log", parent.info.run_id, 6, layout.CELL,
                                 layout.SEED)
    assert killed_run in {run.info.run_id for run in runs}
    chief_pid = str(chief.pid)
    remote = [run for run in runs if run.data.tags[layout.PROCESS].split(":")[0] != chief_pid]
    assert remote, "the joined workers trained none of the jobs"
    # Their models came back to the chief's models/ folder, the weights the workers trained.
    for run in remote:
        tags = run.data.tags
        name = f"seed{tags[layout.SEED]}-{tags[layout.FINGERPRINT][:12]}.keras"
        [path] = list((chief_home / "models").rglob(name))
        reported = json.loads(Path(client.download_artifacts(
            run.info.run_id, "zoo-result/result.json", str(team.folder))).read_text())
        model = keras.saving.load_model(path, compile=False)
        assert weights_sha256(model) == reported["weights_sha256"]


def test_a_zoo_build_across_machines_ships_a_model_a_joined_worker_trained(team):
    """`zoo build-zoo` as the chief (here through its function, to build into a folder of the
    test's and for 3 epochs), one `zoo join` elsewhere: the entry ships whichever seed
    validated best, its file the weights the run that trained it reported."""
    import keras

    from zoo.training.model_files import weights_sha256

    port = free_port()
    team.ports.append(port)
    shared = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    shipped = team.folder / "shipped"
    build = ("from pathlib import Path; from zoo.workflows.build_zoo import build_zoo; "
             f"build_zoo(['digits/mlp'], seeds=(0, 1, 2), directory=Path({str(shipped)!r}), "
             f"overrides=['training.epochs=20'], workers=1, address=('127.0.0.1', {port}))")
    chief_home = team.home("zoo-chief")
    out = open(team.folder / "zoo-chief.log", "w")  # noqa: SIM115 (closed by the process's end)
    chief = subprocess.Popen([sys.executable, "-c", build], stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, env={
                                 **os.environ, "MLFLOW_TRACKING_URI": team.url,
                                 "ZOO_HOME": str(chief_home)})
    worker = team.zoo(["join"], team.home("zoo-worker1"), "zoo-worker1.log",
                      KERASTUNER_TUNER_ID="worker1", **shared)
    _wait(worker, team, "zoo-worker1.log")
    _wait(chief, team, "zoo-chief.log")
    assert "joins 3 jobs" in team.output("zoo-worker1.log")
    entry = json.loads((shipped / "manifest.json").read_text())["entries"]["digits/mlp"]
    assert sorted(entry["run_ids"]) == ["0", "1", "2"]
    client = team.client()
    runs = {seed: client.get_run(run_id) for seed, run_id in entry["run_ids"].items()}
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    worker_runs = [seed for seed, run in runs.items()
                   if run.data.tags[layout.PROCESS].split(":")[0] == str(worker.pid)]
    assert worker_runs, "the joined worker's runs are not among the entry's seeds"
    # Every seed's model is on the chief's machine (a joined worker's came through the store);
    # the shipped file holds the weights its run reported.
    for seed, run in runs.items():
        name = f"seed{seed}-{run.data.tags[layout.FINGERPRINT][:12]}.keras"
        assert list((chief_home / "models").rglob(name)), f"seed {seed}: no model file"
    model = keras.saving.load_model(shipped / entry["file"], compile=False)
    assert weights_sha256(model) == entry["weights_sha256"]
