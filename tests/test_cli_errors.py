"""Bad command-line input: one line `zoo: error: ...`, exit 2, no traceback, nothing recorded."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import run_count
from zoo import cli
from zoo.recipe import load_recipe
from zoo.workflows.tune import TuneStateError, _signature, tune

SPACE = ("tune.space={optimizer.learning_rate: {type: float, min: 1.0e-3, max: 1.0e-1, "
         "sampling: log}}")


def refused(capsys, argv: list[str], *pieces: str) -> str:
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for piece in pieces:
        assert piece in err, f"{piece!r} not in {err!r}"
    return err


def test_ablation_with_an_impossible_cell_fails_before_training(capsys, mlflow_client):
    before, started = run_count(mlflow_client), time.monotonic()
    refused(capsys, ["ablate", "mnist1d/cnn", "--axis", "model.strides=1,2",
                     "--axis", "model.dilation=1,2", "--seeds", "1"],
            "model.dilation", "strides=1")
    assert time.monotonic() - started < 30  # refused up front, not after training a cell
    assert run_count(mlflow_client) == before


@pytest.mark.parametrize("argv,pieces", [
    (["ablate", "digits/mlp", "--axis", "model.dropout=0,0.3", "--seeds", "0"],
     ["--seeds must be at least 1", "received 0"]),
    (["build-zoo", "--seeds", "0"], ["--seeds must be at least 1"]),
    (["tune", "digits/mlp", SPACE, "--workers", "0"], ["--workers must be at least 1"]),
    (["tune", "digits/mlp", SPACE, "--workers", "-2"], ["--workers must be at least 1"]),
])
def test_counts_below_one_are_refused(capsys, mlflow_client, argv, pieces):
    before = run_count(mlflow_client)
    refused(capsys, argv, *pieces)
    assert run_count(mlflow_client) == before


def test_tune_whose_saved_parent_run_is_gone_says_how_to_go_on(tmp_path, mlflow_client):
    recipe = load_recipe("digits/mlp", [SPACE, "training.epochs=1", "tune.max_trials=1"])
    folder = tmp_path / "tuning" / "digits" / "mlp"
    folder.mkdir(parents=True)
    gone = "0" * 32
    (folder / "zoo_tune.json").write_text(json.dumps({**_signature(recipe),
                                                      "parent_run_id": gone}))
    before = run_count(mlflow_client)
    with pytest.raises(TuneStateError) as caught:
        tune(recipe, directory=folder)
    message = str(caught.value)
    assert gone in message and "--overwrite" in message and "\n" not in message
    assert run_count(mlflow_client) == before


def test_compare_of_an_unknown_run_is_one_line(capsys, mlflow_client):
    refused(capsys, ["compare", "--parent", "deadbeef"], "deadbeef")
    refused(capsys, ["compare", "--runs", "deadbeef"], "deadbeef")


def test_version_prints_the_package_version_which_matches_pyproject(capsys):
    import re
    from pathlib import Path

    from zoo import __version__

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"zoo {__version__}"
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.+)"$', pyproject, re.MULTILINE)[1] == __version__


def test_the_zoos_deprecations_print_on_one_line_like_its_errors(capsys):
    import warnings

    from zoo.errors import ZooDeprecation

    assert cli.main(["list", "datasets"]) == 0
    installed = warnings.formatwarning
    assert cli.main(["list", "datasets"]) == 0
    assert warnings.formatwarning is installed  # once per process, not a wrapper per call
    assert warnings.formatwarning("x is now y", ZooDeprecation, "f.py", 1) == (
        "zoo: warning: x is now y\n")
    assert "f.py:1" in warnings.formatwarning("other", UserWarning, "f.py", 1)


def test_a_reader_that_goes_away_ends_the_output_without_a_traceback():
    import subprocess
    import sys

    # `zoo list recipes | head -1`: the reader is gone before the command writes.
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", "list", "recipes"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


@pytest.mark.parametrize("env,argv,pieces", [
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1"}, [],
     ["KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID not"]),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000",
      "KERASTUNER_TUNER_ID": "tuner0"}, ["--workers", "2"], ["tuner0 of a search across",
                                                             "drop --workers"]),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "eight",
      "KERASTUNER_TUNER_ID": "chief"}, [], ["KERASTUNER_ORACLE_PORT must be a port number"]),
])
def test_a_search_across_machines_with_a_missing_or_bad_setting_is_refused(
        capsys, mlflow_client, monkeypatch, env, argv, pieces):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = run_count(mlflow_client)
    refused(capsys, ["tune", "digits/mlp", SPACE, "training.epochs=1", *argv], *pieces)
    assert run_count(mlflow_client) == before


@pytest.mark.parametrize("env,argv,pieces", [
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000",
      "KERASTUNER_TUNER_ID": "tuner1"}, ["join"], ["'tuner1' is not a joining worker's id"]),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}, ["join"],
     ["'' is not a joining worker's id"]),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_TUNER_ID": "worker1"}, ["join"],
     ["KERASTUNER_ORACLE_PORT must be a port number"]),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000",
      "KERASTUNER_TUNER_ID": "worker1"},
     ["ablate", "digits/mlp", "--axis", "model.dropout=0,0.3", "--seeds", "1"],
     ["KERASTUNER_TUNER_ID=worker1 is a worker's id", "zoo join"]),
])
def test_a_grid_across_machines_with_a_bad_setting_is_refused(capsys, mlflow_client,
                                                               monkeypatch, env, argv, pieces):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = run_count(mlflow_client)
    refused(capsys, argv, *pieces)
    assert run_count(mlflow_client) == before
