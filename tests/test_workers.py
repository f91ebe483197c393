"""Parallel workers (`--workers N`): the same results as one process, each job its own MLflow child
run, resumable, and failures or signals that leave no run RUNNING and no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import start_zoo, wait_for_child_runs
from zoo import mlflow_layout as layout
from zoo.errors import ArgumentError
from zoo.recipe import load_recipe
from zoo.workflows.workers import Job, WorkerPool, pick_workers, run_jobs

REPO = Path(__file__).resolve().parents[1]
MLP = REPO / "recipes" / "digits" / "mlp.yaml"
TINY = ["model.widths=[8]", "training.epochs=1", "data.batch_size=128"]


def children(mlflow_client, parent_run_id: str):
    from zoo.tracking import child_runs

    return child_runs(mlflow_client, parent_run_id)


def test_pick_workers_defaults_to_the_cores_capped_by_the_jobs(monkeypatch, capsys):
    monkeypatch.setattr("zoo.workflows.workers.cores", lambda: 8)
    assert pick_workers(None, 3, "ablate") == 3
    assert "3 workers (8 cores, 3 jobs to run" in capsys.readouterr().out
    assert pick_workers(None, 20, "ablate") == 8
    assert pick_workers(4, 2, "ablate") == 2
    assert "only 2 jobs to run" in capsys.readouterr().out
    assert pick_workers(1, 20, "ablate") == 1
    assert pick_workers(None, None, "tune", unit="trial") == 8
    assert pick_workers(None, 0, "ablate") == 1  # nothing to run: nothing started
    with pytest.raises(ArgumentError, match="--workers must be at least 1"):
        pick_workers(0, 3, "ablate")


@pytest.mark.parametrize("argv", [
    ["ablate", "digits/mlp", "--axis", "model.dropout=0,0.3", "--workers", "0"],
    ["build-zoo", "digits/mlp", "--seeds", "1", "--workers", "-1"],
])
def test_workers_below_one_are_refused_before_anything_runs(argv, capsys, mlflow_client):
    from tests.conftest import run_count
    from zoo import cli

    before = run_count(mlflow_client)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err
    assert "--workers must be at least 1" in err
    assert run_count(mlflow_client) == before


def test_a_job_survives_its_trip_to_a_worker():
    recipe = load_recipe(MLP, [*TINY, "seed=4"])
    job = Job(recipe, "dropout=0.2 seed=4", run_name="r", parent_run_id="p",
              tags={"zoo.cell": "{}"}, model_dir=Path("/tmp/m"))
    again = Job.from_json(job.to_json())
    assert again.recipe.fingerprint == recipe.fingerprint
    assert again.recipe.flat() == recipe.flat() and again.recipe.seed == 4
    assert again.recipe.source == recipe.source  # same `zoo.recipe_path` tag
    assert (again.run_name, again.parent_run_id, again.tags, again.model_dir) == (
        "r", "p", {"zoo.cell": "{}"}, Path("/tmp/m"))


@pytest.mark.processes
def test_jobs_in_two_workers_train_what_one_process_trains(tmp_path, monkeypatch):
    from zoo import tracking
    from zoo.training.model_files import weights_sha256

    # Tracked, into a store that does not exist yet: the workers write to SQLite directly.
    # (Two workers that open a new store at once may both migrate its schema, and one fails;
    # the parent creates it first. The race is rare, so this test cannot be sure to catch it.)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    seeds = (0, 1, 2, 3)
    jobs = [Job(load_recipe(MLP, [*TINY, f"seed={seed}"]), f"seed {seed}", track=True,
                model_dir=tmp_path / f"models{seed}") for seed in seeds]
    started, done = [], []
    with WorkerPool.started(1) as pool:
        _wait_for(lambda: (pool.folder / "tuner1.waiting").exists())  # it then asks at once
        parallel = run_jobs(jobs, 2, name="test", on_start=started.append,
                            on_done=lambda index, result: done.append(index), pool=pool)
    assert sorted(started) == sorted(done) == [0, 1, 2, 3]
    # This process keeps the models it trained; the worker's are read from their files.
    assert {result.model is None for result in parallel} == {True, False}
    worker_runs = {result.run_id for result in parallel if result.model is None}
    assert [weights_sha256(r.load_model()) for r in parallel] == [
        r.weights_sha256 for r in parallel]
    mlflow_client = tracking.client()
    runs = mlflow_client.search_runs(
        [e.experiment_id for e in mlflow_client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    # The worker trained beside this process: one inter-op thread (`side_by_side_environment`).
    assert {("inter-op threads 1," in r.data.tags[layout.RUNTIME]) for r in runs
            if r.info.run_id in worker_runs} == {True}
    here = run_jobs(jobs, 1, name="test")
    for a, b in zip(parallel, here, strict=True):
        assert a.weights_sha256 == b.weights_sha256
        assert (a.test_accuracy, a.test_loss, a.history) == (b.test_accuracy, b.test_loss,
                                                             b.history)
    assert len({r.weights_sha256 for r in parallel}) == 4


def _wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _accuracies_and_weights(mlflow_client, parent: str, tmp_path: Path) -> dict:
    import keras
    import mlflow

    from zoo.training.model_files import weights_sha256

    table = {}
    for run in children(mlflow_client, parent):
        assert run.info.status == "FINISHED"
        # The run's MLflow Model (`runs:/<id>/model`), whose Keras file is the inference copy.
        folder = Path(mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / run.info.run_id)))
        model = keras.saving.load_model(folder / "data" / "model.keras", compile=False)
        table[run.info.run_name] = (run.data.metrics["test_accuracy"],
                                    weights_sha256(model), run.data.params)
    return table


@pytest.mark.slow
def test_ablation_in_workers_matches_one_process_and_resumes(mlflow_client, tmp_path,
                                                             monkeypatch, capsys):
    from zoo.workflows.ablate import ablate

    recipe = load_recipe(MLP, [*TINY, "name=workers-test"])
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))  # models/ of this test, workers' included
    axes = [("model.dropout", [0.0, 0.3])]

    sequential = ablate(recipe, axes, seeds=2, workers=1)
    expected = _accuracies_and_weights(mlflow_client, sequential, tmp_path / "one")
    mlflow_client.delete_run(sequential)  # the next ablation then starts a parent of its own

    parent = ablate(recipe, axes, seeds=2, workers=2)
    assert parent != sequential
    assert mlflow_client.get_run(parent).info.status == "FINISHED"
    got = _accuracies_and_weights(mlflow_client, parent, tmp_path / "two")
    assert sorted(got) == sorted(expected) == [
        "dropout=0 seed=0", "dropout=0 seed=1", "dropout=0.3 seed=0", "dropout=0.3 seed=1"]
    assert got == expected
    out = capsys.readouterr().out
    assert out.count(": test_accuracy ") == 8 and "[4/4]" in out

    again = ablate(recipe, axes, seeds=2, workers=2)  # every run finished: none started
    assert again == parent
    assert len(children(mlflow_client, parent)) == 4
    assert mlflow_client.get_run(parent).data.metrics["skipped"] == 4
    assert mlflow_client.get_run(parent).info.status == "FINISHED"


@pytest.mark.slow
def test_a_failing_job_in_a_worker_is_a_one_line_error(mlflow_client, tmp_path, monkeypatch,
                                                       capsys):
    from zoo import cli

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    status = cli.main(["ablate", str(MLP), *TINY, "name=workers-nan", "optimizer.name=sgd",
                       "--axis", "optimizer.learning_rate=0.01,1.0e30", "--seeds", "1",
                       "--workers", "2"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err
    assert "loss became nan" in err and "Traceback" not in err
    experiment = mlflow_client.get_experiment_by_name("digits")
    parent = mlflow_client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name = 'ablate workers-nan'")
    assert parent[0].info.status == "FAILED"
    statuses = {r.info.run_name: r.info.status for r in children(mlflow_client,
                                                                   parent[0].info.run_id)}
    # The other job finished first, or was stopped when this one failed.
    assert [s for n, s in statuses.items() if "1.0e30" in n] == ["FAILED"], statuses
    assert sorted(statuses.values()) in (["FAILED", "FINISHED"], ["FAILED", "KILLED"]), statuses


def _processes_started_by(pid: int) -> list[int]:
    """Processes whose environment names `pid` as their `run_processes` parent."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ZOO_WORKER_PARENT={pid}".encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigterm_stops_the_workers_and_every_run_ends_killed(mlflow_client, tmp_path):
    process = start_zoo(["ablate", str(MLP), *TINY, "name=workers-sigterm",
                         "training.epochs=100000", "--axis", "model.dropout=0,0.3", "--seeds",
                         "1", "--workers", "2"], tmp_path)
    try:
        parent, running = wait_for_child_runs(mlflow_client, "ablate workers-sigterm",
                                              "RUNNING", 2, seconds=300)
        assert len(running) == 2
        assert len(_processes_started_by(process.pid)) >= 1  # the other worker
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 130
    assert mlflow_client.get_run(parent).info.status == "KILLED"
    assert {r.info.status for r in children(mlflow_client, parent)} == {"KILLED"}
    assert _processes_started_by(process.pid) == []


@pytest.mark.slow
def test_build_zoo_in_workers_writes_the_same_manifest(tmp_path):
    from zoo.workflows.build_zoo import build_zoo

    manifests = {}
    for workers in (1, 2):
        manifests[workers] = build_zoo(
            ["digits/mlp"], seeds=(0, 1), directory=tmp_path / f"zoo{workers}", track=False,
            overrides=["training.epochs=2", "model.widths=[8]"],
            model_dir=tmp_path / f"models{workers}", workers=workers)
    one, two = (manifests[w]["entries"]["digits/mlp"] for w in (1, 2))
    # Timing and the saved file's own date differ; everything the training decides does not.
    varying = {"train_seconds", "sha256", "bytes"}
    assert {k: v for k, v in one.items() if k not in varying} == \
        {k: v for k, v in two.items() if k not in varying}
    assert set(one["metrics"]["test_accuracy"]["per_seed"]) == {"0", "1"}


def test_a_grid_that_fails_its_checks_stops_the_early_workers_quietly(tmp_path):
    # `zoo ablate --workers 2` starts its other worker before it loads the grid; a bad grid
    # must still end with its one error line, not with a stopped worker's messages.
    command = [sys.executable, "-m", "zoo.cli", "ablate", "mnist1d/cnn", "--axis",
               "model.strides=1,2", "--axis", "model.dilation=1,2", "--seeds", "1",
               "--workers", "2"]
    env = {**os.environ, "ZOO_HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    ours = [line for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("zoo:")]
    assert len(ours) == 1 and ours[0].startswith("zoo: error: command line: model.dilation")
    assert not (tmp_path / "mlflow.db").exists()  # nothing was recorded


def test_an_oracle_address_that_is_taken_is_a_clear_error():
    import socket

    from zoo.errors import ZooError
    from zoo.workflows.job_tuner import JobOracle
    from zoo.workflows.workers import _serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ZooError, match=f"cannot serve the oracle on 127.0.0.1:{port}"):
            _serve(JobOracle(2), port)
