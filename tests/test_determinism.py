"""Same recipe, seed and thread settings -> identical weights, on the fast path (XLA, an epoch
per call), checked across fresh processes for every model family with BN, dropout and
augmentation on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One case per family; each trains briefly with the switches that draw randomness or keep
# state while training (dropout, batch norm, augmentation) on.
CASES = {
    "mlp": ("mnist1d/mlp", ["model.widths=[32, 32]", "model.normalization=batch",
                            "model.dropout=0.2", "training.epochs=2", "training.steps=null"]),
    "cnn-sequence": ("mnist1d/cnn", ["model.widths=[8, 8]", "model.dropout=0.2",
                                     "model.dense=[8]", "training.epochs=2"]),
    "cnn-image": ("digits/cnn_aug", ["model.widths=[8, 8]", "model.dropout=0.2",
                                     "model.dense=[8]", "training.epochs=2"]),
    "cnn_paper": ("mnist1d/cnn_paper", ["training.steps=null", "training.epochs=2"]),
    "linear": ("mnist1d/linear", ["training.epochs=2",
                                  "data.augmentation=[{op: shift, max_shift: 3}]"]),
}

SCRIPT = """
import json, sys
from pathlib import Path
from zoo.recipe import load_recipe
from zoo.training.trainer import train
cases = json.loads(sys.argv[1])
out = {}
for key, (name, overrides) in cases.items():
    recipe = load_recipe(name, overrides)
    result = train(recipe, track=False, verbose=0, model_dir=Path(sys.argv[2]))
    out[key] = [result.weights_sha256, result.execution]
print(json.dumps(out))
"""


def _train_in_fresh_process(cases: dict, tmp_path: Path, tag: str,
                            xla: str) -> subprocess.Popen:
    folder = tmp_path / tag
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(cases), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "ZOO_XLA": xla})


def _hashes(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


# XLA compiles each of these models for seconds: the default suite runs the XLA path on the
# sequence CNN (augmentation on) and the short-run path without XLA (what ZOO_XLA=auto gives
# runs under 4,000 steps) on an MLP and an image CNN; the slow suite runs both on every family.
@pytest.mark.processes
@pytest.mark.parametrize("xla,families", [
    ("1", ["cnn-sequence"]),
    ("0", ["mlp", "cnn-image"]),
    pytest.param("0", list(CASES), marks=pytest.mark.slow),
    pytest.param("1", list(CASES), marks=pytest.mark.slow),
], ids=["xla-cnn", "no-xla-mlp-and-cnn", "no-xla-every-family", "xla-every-family"])
def test_same_seed_gives_identical_weights_in_fresh_processes(xla, families, tmp_path):
    cases = {key: CASES[key] for key in families}
    # Two processes at once, as `--workers 2` runs them.
    first = _train_in_fresh_process(cases, tmp_path, "first", xla)
    second = _train_in_fresh_process(cases, tmp_path, "second", xla)
    a, b = _hashes(first), _hashes(second)
    for key in families:
        assert a[key][0] == b[key][0], f"{key}: different weights from the same seed"
        assert f"XLA {'on' if xla == '1' else 'off'}" in a[key][1], a[key][1]
        assert "op determinism off" in a[key][1], a[key][1]
    assert len({a[key][0] for key in families}) == len(families)


def test_another_thread_drawing_from_random_does_not_change_a_model():
    """Keras draws the seeds of initializers and dropout layers from Python's `random`; a
    grid's parent process has threads that draw from it too (Keras Tuner's trial ids)."""
    import random
    import threading

    import keras
    import numpy as np

    from zoo.data import load_dataset
    from zoo.models import model_for
    from zoo.recipe import load_recipe

    recipe = load_recipe("digits/mlp", ["seed=3"])
    splits = load_dataset(recipe.data.dataset, recipe.data.validation_split)

    def built(drawing: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(recipe.seed)
        stop = threading.Event()

        def draw():
            while not stop.is_set():
                random.randint(1, 10**7)

        thread = threading.Thread(target=draw)
        if drawing:
            thread.start()
        try:
            model = model_for(recipe, splits)
        finally:
            stop.set()
            if drawing:
                thread.join()
        return [keras.ops.convert_to_numpy(v) for v in model.variables]

    quiet, raced = built(False), built(True)
    assert len(quiet) == len(raced)
    for a, b in zip(quiet, raced, strict=True):
        np.testing.assert_array_equal(a, b)
