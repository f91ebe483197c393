"""Augmentation ops: shapes kept, data changed, seeded streams, misfits refused at load."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.augment import IMAGE_OPS, SEQUENCE_OPS, augment_batch, preview
from zoo.data import load_dataset, make_dataset
from zoo.errors import RecipeError
from zoo.recipe import load_recipe
from zoo.train import train


def _ops(recipe_name: str, ops: str):
    return load_recipe(recipe_name, [f"data.augmentation={ops}"]).data.augmentation


@pytest.mark.parametrize("op,dataset", [*[(op, "digits") for op in IMAGE_OPS],
                                        *[(op, "mnist1d") for op in SEQUENCE_OPS]])
def test_each_op_keeps_shape_and_changes_some_examples(op, dataset):
    recipe = "digits/cnn" if dataset == "digits" else "mnist1d/cnn_plain"
    splits = load_dataset(dataset, 0.1)
    x = splits.x_train[:32]
    out = augment_batch(x, _ops(recipe, f"[{{op: {op}}}]"), seed=0,
                        mean=float(splits.x_train.mean()), std=float(splits.x_train.std()))
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    changed = [not np.allclose(a, b) for a, b in zip(out, x, strict=True)]
    assert sum(changed) >= 8, f"{op} changed only {sum(changed)} of 32 examples"


def test_same_seed_same_stream_other_seed_other_stream():
    ops = _ops("digits/cnn", "[{op: rotation}, {op: cutout}, {op: noise}]")
    x = load_dataset("digits", 0.1).x_train[:16]
    first, again = (augment_batch(x, ops, 3, 5.0, 6.0) for _ in range(2))
    other = augment_batch(x, ops, 4, 5.0, 6.0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_each_epoch_draws_new_augmentations_deterministically():
    from zoo.augment import augment_dataset
    from zoo.train import seed_everything

    splits = load_dataset("mnist1d", 0.1)
    ops = _ops("mnist1d/cnn_plain", "[{op: noise}]")

    def two_epochs():
        ds = make_dataset(splits.x_train[:50], splits.y_train[:50], 10, 50, shuffle_seed=1,
                          augment=lambda d: augment_dataset(d, ops, 1, 0.0, 1.0))
        return [next(iter(ds))[0].numpy() for _ in range(2)]

    seed_everything(1)  # as training does with the recipe seed
    first = two_epochs()
    seed_everything(1)
    second = two_epochs()
    assert not np.array_equal(first[0], first[1])  # a new draw each epoch
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize("recipe,ops,message", [
    ("mnist1d/cnn_plain", "[{op: rotation}]", "op 'rotation' does not apply to sequences"),
    ("digits/cnn", "[{op: shift}]", "op 'shift' does not apply to images"),
    ("digits/cnn", "[{op: twirl}]", "does not match any of the expected tags"),
    ("digits/cnn", "[{op: cutout, size: 0}]", "greater than 0"),
    ("digits/cnn", "[{op: flip, mode: diagonal}]", "'horizontal'"),
])
def test_ops_that_do_not_fit_are_refused_at_load_time(recipe, ops, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, [f"data.augmentation={ops}"])


def test_augmented_training_is_reproducible(tmp_path):
    overrides = ["training.epochs=2", "model.widths=[8]", "data.batch_size=128",
                 "data.augmentation=[{op: rotation}, {op: translation}, {op: cutout}]"]
    first = train(load_recipe("digits/cnn", overrides), track=False, verbose=0,
                  model_dir=tmp_path)
    second = train(load_recipe("digits/cnn", overrides), track=False, verbose=0,
                   model_dir=tmp_path)
    assert first.weights_sha256 == second.weights_sha256


def test_preview_writes_a_png(tmp_path):
    recipe = load_recipe("mnist1d/cnn_bn_aug")
    path = preview(recipe, tmp_path / "grid.png", samples=3, variants=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RecipeError, match="augmentation is empty"):
        preview(load_recipe("mnist1d/cnn_plain"), tmp_path / "none.png")
