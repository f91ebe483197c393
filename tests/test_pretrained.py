"""The pretrained zoo: the shipped models against their manifest, safe loading, build, reproduce,
predict."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import cli
from zoo.data import load_dataset
from zoo.errors import ModelFileError, UnknownNameError
from zoo.pretrained import loader
from zoo.pretrained.predict import read_inputs
from zoo.workflows import build_zoo as build
from zoo.workflows.reproduce import reproduce

REPO = Path(__file__).resolve().parents[1]
SHIPPED = loader.manifest()["entries"]


def _accuracy(model, entry) -> float:
    splits = load_dataset(entry["dataset"], entry["recipe"]["data"]["validation_split"])
    predicted = model.predict(splits.x_test, batch_size=256, verbose=0).argmax(axis=-1)
    return float(np.mean(predicted == splits.y_test))


def _test_size(entry) -> int:
    return len(load_dataset(entry["dataset"], 0.1).y_test)


# Entries shipped below their target: what was measured and why. Their cards and the README's
# table say "NOT met" too. Strict, so an entry that reaches its target fails here until it is
# taken off the list.
BELOW_TARGET: dict[str, str] = {
    "fashion_mnist/cnn_small": "0.9302 +- 0.0007 over seeds 0-2 (AMD EPYC, 25 epochs, 9.5 min a "
    "seed); 40 epochs gave seed 0 0.9324 with the same validation accuracy (0.936)",
    "fashion_mnist/resnet": "0.9276 +- 0.0008 over seeds 0-2 (AMD EPYC, 12 epochs, 10.5 min a "
    "seed): what the zoo's hour on 2 CPU cores leaves it; the published residual nets trained "
    "for hundreds of epochs",
}


def test_every_entry_of_the_issue_is_shipped_over_three_seeds():
    assert set(build.ENTRIES) <= set(SHIPPED)
    for name in build.ENTRIES:
        assert len(SHIPPED[name]["metrics"]["test_accuracy"]["per_seed"]) == 3, name
        assert SHIPPED[name]["target"] == build.ENTRIES[name], name


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=BELOW_TARGET[name]))
    if name in BELOW_TARGET else name for name in build.ENTRIES])
def test_every_entry_meets_its_target(name):
    mean = SHIPPED[name]["metrics"]["test_accuracy"]["mean"]
    assert mean >= build.ENTRIES[name], (name, mean)


def test_shipped_files_are_small():
    # Fashion-MNIST's MLP is 5.3 MB by itself (1.3 million float32 weights); the rest about 4.
    total = sum((loader.PRETRAINED_DIR / e["file"]).stat().st_size for e in SHIPPED.values())
    assert total < 10 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_matches_its_manifest(name):
    entry = zoo.manifest_entry(name)
    path = loader.PRETRAINED_DIR / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    model = zoo.load(name)
    from zoo.training.model_files import weights_sha256

    assert weights_sha256(model) == entry["weights_sha256"]
    assert model.count_params() == entry["params"]
    assert list(model.input_shape[1:]) == entry["input_shape"]
    # Raw test inputs in (standardization is inside the model), the manifest's accuracy out.
    # The manifest was computed on the building machine: another CPU's rounding may flip an
    # example whose two top classes are within float32 noise, so two examples of slack.
    assert abs(_accuracy(model, entry) - entry["metrics"]["shipped"]["test_accuracy"]) <= (
        2 / _test_size(entry) + 1e-9)


def test_shipped_files_load_with_plain_keras_without_the_zoo():
    files = [str(loader.PRETRAINED_DIR / e["file"]) for e in SHIPPED.values()]
    script = (
        "import sys, keras\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras.saving.load_model(path, safe_mode=True)\n"
        "    print(model.name, model.count_params())\n"
        "assert 'zoo' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True,
                          cwd="/", timeout=300, env={"PATH": "/usr/bin:/bin",
                                                     "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(files)


def test_list_pretrained_and_cli_listing(capsys):
    rows = zoo.list_pretrained()
    assert {row["name"] for row in rows} == set(SHIPPED)
    assert cli.main(["list", "pretrained"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out
    missed = {line.split()[0] for line in out.splitlines() if "MISSED" in line}
    assert missed == set(BELOW_TARGET)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="mnist1d/cnn_paper"):
        zoo.load("mnist1d/nope")


# ---------------------------------------------------------------------------------------------
# Safe loading: every refusal happens before Keras parses the file.


@pytest.fixture
def copy_of_zoo(tmp_path):
    """A copy of the shipped zoo (manifest + digits/mlp) that tests may damage."""
    name = "digits/mlp"
    entry = SHIPPED[name]
    (tmp_path / "digits").mkdir()
    shutil.copy(loader.PRETRAINED_DIR / entry["file"], tmp_path / entry["file"])
    (tmp_path / "manifest.json").write_text(json.dumps({"entries": {name: entry}}))
    return tmp_path, name, tmp_path / entry["file"]


@pytest.fixture
def keras_never_parses(monkeypatch):
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError("keras parsed a file that should have been refused")

    monkeypatch.setattr(keras.saving, "load_model", refuse)


def test_a_tampered_file_is_refused_naming_file_and_hash(copy_of_zoo, keras_never_parses):
    directory, name, path = copy_of_zoo
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as err:
        zoo.load(name, directory=directory)
    assert str(path) in str(err.value)
    assert SHIPPED[name]["sha256"] in str(err.value)


def test_truncated_swapped_and_missing_files_are_refused(copy_of_zoo, keras_never_parses):
    directory, name, path = copy_of_zoo
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 3])
    with pytest.raises(ModelFileError, match="does not match"):
        zoo.load(name, directory=directory)
    shutil.copy(loader.PRETRAINED_DIR / SHIPPED["digits/cnn"]["file"], path)  # another model
    with pytest.raises(ModelFileError, match="does not match"):
        zoo.load(name, directory=directory)
    path.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        zoo.load(name, directory=directory)


def test_only_keras_files_are_loaded(tmp_path, keras_never_parses):
    weights = tmp_path / "model.h5"
    weights.write_bytes(b"anything")
    with pytest.raises(ModelFileError, match="only .keras"):
        loader.load_verified(weights, hashlib.sha256(b"anything").hexdigest())


def test_a_class_outside_keras_is_refused_even_with_a_matching_hash(copy_of_zoo,
                                                                   keras_never_parses):
    directory, name, path = copy_of_zoo
    with zipfile.ZipFile(path) as archive:
        files = {item: archive.read(item) for item in archive.namelist()}
    config = json.loads(files["config.json"])
    layer = config["config"]["layers"][2]
    layer.update(module="evil.layers", class_name="Backdoor", registered_name="evil>Backdoor")
    files["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item, data in files.items():
            archive.writestr(item, data)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="Backdoor"):
        loader.load_verified(path, hashlib.sha256(buffer.getvalue()).hexdigest())


# ---------------------------------------------------------------------------------------------
# Build, reproduce and predict on a quick build into a temporary folder.


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pretrained")
    models = tmp_path_factory.mktemp("models")
    manifest = build.build_zoo(["digits/mlp"], seeds=(0, 1), directory=directory, track=False,
                               overrides=["training.epochs=2"], model_dir=models)
    return directory, models, manifest


def test_build_writes_manifest_card_and_a_loadable_model(quick_zoo):
    directory, _, manifest = quick_zoo
    entry = manifest["entries"]["digits/mlp"]
    val = entry["metrics"]["val_accuracy"]["per_seed"]
    assert entry["seed"] == int(max(val, key=lambda seed: (val[seed], -int(seed))))
    accuracies = list(entry["metrics"]["test_accuracy"]["per_seed"].values())
    assert entry["metrics"]["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert entry["metrics"]["test_accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    for key in ("file", "sha256", "recipe", "params", "input_shape", "class_names"):
        assert entry[key]
    for key in ("versions", "hardware", "date"):
        assert manifest[key]
    assert entry["recipe"]["training"]["epochs"] == 2 and entry["recipe"]["seed"] == entry["seed"]
    card = (directory / "digits" / "mlp.md").read_text()
    assert entry["sha256"] in card and "make reproduce MODEL=digits/mlp" in card
    assert "Apache-2.0" in card.split("## Terms")[1] and "CC BY 4.0" in card
    model = zoo.load("digits/mlp", directory=directory)
    # Evaluated in batches of another size than training's: one example of slack for a
    # near-tie that another kernel rounds the other way.
    assert abs(_accuracy(model, entry) - entry["metrics"]["shipped"]["test_accuracy"]) <= (
        1 / _test_size(entry) + 1e-9)
    # The shipped file has no optimizer state: smaller than the training copy.
    trained = next(quick_zoo[1].rglob(f"seed{entry['seed']}-*.keras"))
    assert (directory / entry["file"]).stat().st_size < trained.stat().st_size


def test_reproduce_gives_identical_weights(quick_zoo, tmp_path):
    directory = quick_zoo[0]
    result = reproduce("digits/mlp", directory=directory, track=False, model_dir=tmp_path)
    assert result.identical, result.report()
    assert result.new_accuracy == pytest.approx(result.shipped_accuracy)
    assert result.verdict.startswith("reproduced: identical")


def test_reproduce_verdicts():
    from zoo.workflows.reproduce import Reproduction

    close = Reproduction("m", 0, "a", "b", 0.900, 0.896, None)
    far = Reproduction("m", 0, "a", "b", 0.900, 0.890, None)
    assert close.verdict.startswith("reproduced: weights differ")
    assert far.verdict.startswith("NOT reproduced")
    # On another CPU model the retrained run is judged against the entry's seeds' spread
    # (the shipped seed is the best of them); on the building machine it is not.
    seeds = {"seed_range": (0.880, 0.900)}
    other = {"built_on": "Intel(R) Xeon(R) Processor", "retrained_on": "AMD EPYC"}
    within = Reproduction("m", 0, "a", "b", 0.900, 0.882, None, **other, **seeds)
    assert within.verdict.startswith("reproduced: weights differ (built on Intel")
    assert "AMD EPYC" in within.verdict and "0.8800 to 0.9000" in within.verdict
    below = Reproduction("m", 0, "a", "b", 0.900, 0.870, None, **other, **seeds)
    assert below.verdict.startswith("NOT reproduced") and "retrained on AMD EPYC" in below.verdict
    same = {"built_on": "AMD EPYC", "retrained_on": "AMD EPYC"}
    here = Reproduction("m", 0, "a", "b", 0.900, 0.882, None, **same, **seeds)
    assert here.verdict.startswith("NOT reproduced") and "built on" not in here.verdict


def test_readme_table_is_generated_from_the_manifest(quick_zoo, tmp_path):
    manifest = quick_zoo[2]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{build.TABLE_START}\nold\n{build.TABLE_END}\nrest\n")
    assert build.update_readme(manifest, readme)
    text = readme.read_text()
    accuracy = manifest["entries"]["digits/mlp"]["metrics"]["test_accuracy"]["mean"]
    assert f"{accuracy:.4f}" in text and "old" not in text and text.endswith("rest\n")


def test_the_readme_table_matches_the_shipped_manifest():
    text = (REPO / "README.md").read_text()
    assert build.zoo_table(loader.manifest()) in text


def test_predict_from_npy_and_image(tmp_path, capsys):
    entry = SHIPPED["digits/cnn"]
    splits = load_dataset("digits", entry["recipe"]["data"]["validation_split"])
    batch = tmp_path / "batch.npy"
    np.save(batch, splits.x_test[:5, :, :, 0])  # channel axis left out: added back
    assert read_inputs(batch, entry).shape == (5, 8, 8, 1)
    assert cli.main(["predict", "digits/cnn", str(batch)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    expected = zoo.load("digits/cnn").predict(splits.x_test[:5], verbose=0).argmax(axis=-1)
    assert [line.split()[1] for line in lines] == [entry["class_names"][i] for i in expected]

    import matplotlib.image

    image = tmp_path / "digit.png"
    example = splits.x_test[0, :, :, 0] / splits.x_train.max()
    matplotlib.image.imsave(image, np.kron(example, np.ones((4, 4))), cmap="gray", vmin=0, vmax=1)
    x = read_inputs(image, entry)
    assert x.shape == (1, 8, 8, 1)
    assert np.abs(x[0, :, :, 0] - splits.x_test[0, :, :, 0]).max() < 1.0  # on the 0..16 scale
    assert cli.main(["predict", "digits/cnn", str(image)]) == 0
    assert capsys.readouterr().out.split()[1] == entry["class_names"][expected[0]]


def test_predict_refuses_bad_inputs(tmp_path, capsys):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 7)))
    assert cli.main(["predict", "mnist1d/cnn", str(wrong)]) == 2
    assert "fits neither" in capsys.readouterr().err
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert cli.main(["predict", "mnist1d/cnn", str(image)]) == 2
    assert "not images" in capsys.readouterr().err
    assert cli.main(["predict", "digits/cnn", str(tmp_path / "absent.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_build_zoo_starts_with_the_entries_that_took_longest_last_time():
    from zoo.workflows.build_zoo import _last_seconds

    manifest = {"entries": {"a": {"train_seconds": {"0": 10.0, "1": 30.0}},
                            "b": {"train_seconds": {"0": 100.0}}}}
    assert _last_seconds(manifest, "a") == 20.0
    assert _last_seconds(manifest, "new") == float("inf")  # never built: first
    assert sorted(["a", "new", "b"], key=lambda n: -_last_seconds(manifest, n)) == [
        "new", "b", "a"]


def test_every_shipped_card_states_the_terms_of_its_weights_and_data():
    manifest = json.loads((REPO / "zoo/pretrained/manifest.json").read_text())
    for name, entry in manifest["entries"].items():
        terms = (REPO / "zoo/pretrained" / f"{name}.md").read_text().split("## Terms")
        assert len(terms) == 2, f"{name}.md has no Terms section"
        assert "LICENSE" in terms[1] and build.DATA_TERMS[entry["dataset"]] in terms[1]
    assert "Apache License" in (REPO / "LICENSE").read_text()


def test_the_old_name_card_still_answers_with_a_warning():
    name = sorted(SHIPPED)[0]
    with pytest.warns(FutureWarning, match="zoo.manifest_entry"):
        assert zoo.card(name) == zoo.manifest_entry(name)
