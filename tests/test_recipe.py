"""Recipe schema, loading, overrides and the messages bad recipes get."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_count
from zoo import cli
from zoo.errors import RecipeError
from zoo.recipe import list_recipes, load_recipe

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "recipes" / "base.yaml"


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("BASE", str(BASE)))
    return path


GOOD = """\
    extends: BASE
    name: t
    data: {dataset: digits}
    model: {name: mlp, widths: [16]}
    training: {epochs: 1}
"""

# (description, recipe text or None for GOOD, overrides, pieces the one-line message must hold)
BAD_RECIPES = [
    ("unknown top-level key", GOOD + "    modle: {name: mlp}\n", [],
     ["modle", "unknown key", "allowed keys here", "model"]),
    ("unknown nested key", None, ["optimizer.lr=0.1"],
     ["command line", "optimizer.lr", "unknown key", "learning_rate"]),
    ("unknown builder argument", None, ["model.dropot=0.1"],
     ["model.dropot", "unknown key", "dropout", "widths"]),
    ("wrong type", None, ["training.epochs=abc"],
     ["training.epochs", "valid integer", "'abc'"]),
    ("dropout out of range", None, ["model.dropout=1.5"],
     ["model.dropout", "less than 1", "1.5"]),
    ("negative learning rate", None, ["optimizer.learning_rate=-0.1"],
     ["optimizer.learning_rate", "greater than 0", "-0.1"]),
    ("unknown data set", None, ["data.dataset=imagenet"],
     ["data.dataset", "unknown data set 'imagenet'", "digits", "mnist1d", "tfds:<name>"]),
    ("unknown tfds data set", None, ["data.dataset=tfds:no_such_set"],
     ["data.dataset", "tfds:no_such_set", "tfds:mnist"]),
    ("unknown model", None, ["model.name=resnet"],
     ["model.name", "unknown model 'resnet'", "cnn", "cnn_paper", "linear", "mlp"]),
    ("bad categorical value", None, ["model.normalization=bn"],
     ["model.normalization", "'batch'", "'layer'", "'group'", "'none'", "'bn'"]),
    ("bad optimizer", None, ["optimizer.name=adamax"],
     ["optimizer.name", "'adamw'", "'nesterov'", "'adamax'"]),
    ("validation split of 1", None, ["data.validation_split=1"],
     ["data.validation_split", "less than 1"]),
    # Constraints between builder arguments, or with the kind of data, fail at load time too.
    ("dilation with strides", None,
     ["model.name=cnn", "model.strides=2", "model.dilation=2"],
     ["command line", "model.dilation", "needs strides=1", "strides=2"]),
    ("causal padding on images", None, ["model.name=cnn", "model.padding=causal"],
     ["model.padding", "causal padding is for sequences"]),
    ("groups that do not divide the widths", None, ["model.name=cnn", "model.groups=3"],
     ["model.groups", "must divide every width", "[16]"]),
    ("norm groups that do not divide the widths", None,
     ["model.normalization=group", "model.norm_groups=3"],
     ["model.norm_groups", "must divide every width"]),
    ("the paper's CNN on images", GOOD.replace("{name: mlp, widths: [16]}", "{name: cnn_paper}"),
     [], ["recipe.yaml", "model.name", "cnn_paper takes sequences"]),
    ("early stopping on val_loss without validation", None,
     ["data.validation_split=0", "regularization.early_stopping={patience: 2}"],
     ["command line", "regularization.early_stopping.monitor", "val_loss",
      "validation_split"]),
    ("plateau on val_loss without validation", None,
     ["data.validation_split=0", "optimizer.schedule=plateau"],
     ["optimizer.monitor", "val_loss", "validation_split is 0"]),
    ("tuning on val_accuracy without validation", None,
     ["data.validation_split=0",
      "tune.space={optimizer.learning_rate: {type: float, min: 0.001, max: 0.1}}"],
     ["tune.objective", "val_accuracy", "validation_split is 0"]),
    ("python tag", GOOD + "    seed: !!python/object/apply:os.system ['true']\n", [],
     ["recipe.yaml", "line 6", "python/object", "safe_load"]),
    ("not YAML", GOOD + "    data: [unclosed\n", [], ["recipe.yaml", "not valid YAML"]),
    ("not a mapping", "- a\n- b\n", [], ["recipe.yaml", "mapping", "list"]),
    ("missing parent", "extends: nowhere.yaml\nname: t\n", [],
     ["extends", "file not found", "nowhere.yaml"]),
    ("malformed override", None, ["epochs"], ["command line", "dotted.key=value"]),
    ("override below a value", None, ["seed.x=1"], ["seed.x", "not a section"]),
]


@pytest.mark.parametrize("text,overrides,pieces",
                         [case[1:] for case in BAD_RECIPES], ids=[c[0] for c in BAD_RECIPES])
def test_bad_recipe_is_refused_with_one_line_naming_the_key(tmp_path, text, overrides, pieces):
    path = write(tmp_path, text or GOOD)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, f"{piece!r} not in {message!r}"


@pytest.mark.parametrize("text,overrides,pieces",
                         [case[1:] for case in BAD_RECIPES], ids=[c[0] for c in BAD_RECIPES])
def test_cli_exits_2_with_that_line_and_starts_no_run(tmp_path, capsys, mlflow_client, text,
                                                      overrides, pieces):
    before = run_count(mlflow_client)
    path = write(tmp_path, text or GOOD)
    status = cli.main(["train", str(path), *overrides])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("zoo: error: ") and captured.err.count("\n") == 1
    assert all(piece in captured.err for piece in pieces), captured.err
    assert "Traceback" not in captured.err
    assert run_count(mlflow_client) == before


def test_validation_split_zero_is_allowed_with_training_metrics(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), [
        "data.validation_split=0", "regularization.early_stopping={monitor: loss}",
        "optimizer.schedule=plateau", "optimizer.monitor=loss"])
    assert recipe.data.validation_split == 0


def test_missing_recipe_lists_known_ones():
    with pytest.raises(RecipeError, match="recipe not found: mnist1d/nope.*mnist1d/cnn_paper"):
        load_recipe("mnist1d/nope")


def test_extends_cycle_is_refused(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_cli_prints_no_traceback_for_user_errors(tmp_path, mlflow_store):
    path = write(tmp_path, GOOD + "    seed: !!python/object/apply:os.system ['touch pwned']\n")
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "train", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "python/object" in done.stderr
    assert not (tmp_path / "pwned").exists()


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    parent = write(tmp_path, GOOD + "    data: {dataset: digits, batch_size: 7}\n", "parent.yaml")
    child = write(tmp_path, f"extends: {parent.name}\nmodel: {{widths: [8, 4]}}\n", "child.yaml")
    recipe = load_recipe(child)
    assert recipe.model.args["widths"] == [8, 4]  # the list replaced, not appended
    assert recipe.model.name == "mlp"  # the mapping merged key by key
    assert recipe.data.batch_size == 7
    assert recipe.name == "child"  # names are never inherited


def test_overrides_are_yaml_typed(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD),
                         ["optimizer.learning_rate=1e-2", "model.widths=[4, 2]",
                          "regularization.early_stopping={patience: 3}", "data.standardize=no"])
    assert recipe.optimizer.learning_rate == pytest.approx(0.01)
    assert recipe.model.args["widths"] == [4, 2]
    assert recipe.regularization.early_stopping.patience == 3
    assert recipe.data.standardize is False


def test_resolved_recipe_holds_every_builder_default(tmp_path):
    resolved = load_recipe(write(tmp_path, GOOD)).resolved()
    assert resolved["model"] == {
        "name": "mlp", "widths": [16], "activation": "relu", "activation_alpha": 0.01,
        "normalization": "none", "norm_position": "pre", "norm_groups": 4, "dropout": 0.0,
        "residual": False, "initializer": "he_normal",
    }


def test_fingerprint_ignores_seed_and_name_but_not_config(tmp_path):
    path = write(tmp_path, GOOD)
    base = load_recipe(path)
    assert load_recipe(path, ["seed=5", "name=other"]).fingerprint == base.fingerprint
    assert load_recipe(path, ["model.dropout=0.1"]).fingerprint != base.fingerprint
    # Stating a default explicitly is the same configuration.
    assert load_recipe(path, ["model.activation=relu"]).fingerprint == base.fingerprint


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["model.dropout=0.25"])
    again = write(tmp_path, recipe.to_yaml(), "resolved.yaml")
    assert load_recipe(again).fingerprint == recipe.fingerprint


def test_with_overrides_revalidates(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.with_overrides({"model.dropout": 0.5}).model.args["dropout"] == 0.5
    with pytest.raises(RecipeError, match="model.dropout"):
        recipe.with_overrides(["model.dropout=2"])


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.source.name == Path(name).name + ".yaml"


def test_overlays_are_not_listed_as_recipes():
    listed = list_recipes()
    assert "mnist1d/cnn_paper" in listed
    assert not [name for name in listed if name.startswith("overlays")], listed
    # The make targets come from their own glob in the Makefile.
    targets = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "show-recipes:; @echo $(RECIPES)",
         "show-recipes"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout.split()
    assert "mnist1d/cnn_paper" in targets
    assert not [t for t in targets if t.startswith("overlays")], targets
