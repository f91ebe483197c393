"""training.precision (Keras mixed precision) and training.distribute (MirroredStrategy), on
CPU: bfloat16 and two logical CPU devices stand in for a GPU's float16 and several GPUs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from zoo.recipe import load_recipe
from zoo.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


def test_new_keys_at_their_defaults_keep_a_recipes_fingerprint():
    from zoo.pretrained.loader import manifest_entry
    from zoo.recipe import validate

    entry = manifest_entry("digits/cnn")
    # The recipe as written before the keys existed: without them.
    before = copy.deepcopy(entry["recipe"])
    for key in ("precision", "distribute"):
        before["training"].pop(key, None)
    for key in ("subset", "shuffle"):
        before["data"].pop(key, None)
    assert "precision" not in before["training"]
    assert validate(before).fingerprint == entry["fingerprint"]
    assert load_recipe("digits/cnn").fingerprint == entry["fingerprint"]
    for override in ("training.precision=mixed_bfloat16", "training.distribute=mirrored",
                     "data.subset=500", "data.shuffle=false"):
        assert load_recipe("digits/cnn", [override]).fingerprint != entry["fingerprint"]


def test_mixed_bfloat16_computes_in_16_bits_and_matches_float32(tmp_path):
    full = train(load_recipe("digits/cnn"), track=False, verbose=0, model_dir=tmp_path)
    mixed = train(load_recipe("digits/cnn", ["training.precision=mixed_bfloat16"]),
                  track=False, verbose=0, model_dir=tmp_path)
    layers = {layer.name: layer for layer in mixed.model.layers}
    conv = next(layer for name, layer in layers.items() if "conv" in name)
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert layers["classifier"].compute_dtype == "float32"  # the softmax and the loss
    assert "precision mixed_bfloat16" in mixed.execution
    assert abs(mixed.test_accuracy - full.test_accuracy) <= 0.02, (
        mixed.test_accuracy, full.test_accuracy)
    # The policy was the run's own: the next model of the process is float32 again.
    assert full.model.layers[1].compute_dtype == "float32"
    import keras

    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_mixed_float16_scales_the_loss(tmp_path):
    import keras

    result = train(load_recipe("digits/mlp", ["training.precision=mixed_float16",
                                              "training.epochs=1"]),
                   track=False, verbose=0, model_dir=tmp_path)
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from zoo.recipe import load_recipe
from zoo.training.trainer import train
out = {}
for distribute in ("mirrored", "none"):
    recipe = load_recipe("digits/mlp", ["training.epochs=20", f"training.distribute={distribute}"])
    result = train(recipe, track=False, verbose=0, model_dir=Path(sys.argv[1]))
    out[distribute] = [result.test_accuracy, result.execution]
print(json.dumps(out))
"""


def test_mirrored_over_two_logical_devices_matches_one(tmp_path):
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert "mirrored over 2 devices" in out["mirrored"][1]
    assert abs(out["mirrored"][0] - out["none"][0]) <= 0.03, out
    assert out["mirrored"][0] > 0.9, out
