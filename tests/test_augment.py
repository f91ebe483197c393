"""Augmentation ops: shapes kept, data changed as each op says, one draw per example, seeded
streams, batches in the pipeline, misfits refused at load."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import augment as aug
from zoo.data import load_dataset, make_dataset
from zoo.data.augment import IMAGE_OPS, SEQUENCE_OPS, augment_batch, augment_dataset, preview
from zoo.errors import RecipeError
from zoo.recipe import load_recipe
from zoo.training.trainer import train

RECIPE_FOR = {"digits": "digits/cnn", "mnist1d": "mnist1d/cnn_plain"}
ALL_OPS = [*[(op, "digits") for op in IMAGE_OPS], *[(op, "mnist1d") for op in SEQUENCE_OPS]]


def _ops(recipe_name: str, ops: str):
    return load_recipe(recipe_name, [f"data.augmentation={ops}"]).data.augmentation


def _real(dataset: str, n: int):
    """The first n training examples and the training mean and std."""
    splits = load_dataset(dataset, 0.1)
    return splits.x_train[:n], float(splits.x_train.mean()), float(splits.x_train.std())


def _distinct(batch: np.ndarray) -> int:
    return len(np.unique(batch.reshape(len(batch), -1).round(5), axis=0))


def _ramp_image(batch: int, size: int = 8) -> np.ndarray:
    """Identical images whose values 1..size² say where each pixel came from."""
    image = np.arange(1, size * size + 1, dtype=np.float32).reshape(size, size, 1)
    return np.repeat(image[None], batch, axis=0)


def _ramp_sequence(batch: int, length: int = 40) -> np.ndarray:
    """Identical sequences whose values 1..length say where each position came from."""
    return np.repeat(np.arange(1, length + 1, dtype=np.float32)[None, :, None], batch, axis=0)


# --- All ops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("op,dataset", ALL_OPS)
def test_each_op_keeps_shape_and_changes_some_examples(op, dataset):
    x, mean, std = _real(dataset, 32)
    out = augment_batch(x, _ops(RECIPE_FOR[dataset], f"[{{op: {op}}}]"), seed=0, mean=mean,
                        std=std)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    changed = [not np.allclose(a, b) for a, b in zip(out, x, strict=True)]
    assert sum(changed) >= 8, f"{op} changed only {sum(changed)} of 32 examples"


@pytest.mark.parametrize("op,dataset", ALL_OPS)
def test_each_example_of_a_batch_gets_its_own_draw(op, dataset):
    x, mean, std = _real(dataset, 1)
    copies = np.repeat(x, 32, axis=0)
    out = augment_batch(copies, _ops(RECIPE_FOR[dataset], f"[{{op: {op}}}]"), seed=0, mean=mean,
                        std=std)
    # A horizontal flip has two outcomes, a shift by at most 4 has nine.
    least = {"flip": 2, "shift": 6}.get(op, 12)
    assert _distinct(out) >= least, f"{op}: {_distinct(out)} distinct outputs of 32 copies"


@pytest.mark.parametrize("dataset,ops", [
    ("digits", "[{op: rotation}, {op: cutout}, {op: noise}]"),
    ("digits", "[{op: flip}, {op: crop}, {op: contrast}]"),
    ("mnist1d", "[{op: shift}, {op: scale}, {op: noise}]"),
    ("mnist1d", "[{op: mask}]"),
])
def test_same_seed_same_stream_other_seed_other_stream(dataset, ops):
    ops = _ops(RECIPE_FOR[dataset], ops)
    x = _real(dataset, 16)[0]
    first, again = (augment_batch(x, ops, 3, 5.0, 6.0) for _ in range(2))
    other = augment_batch(x, ops, 4, 5.0, 6.0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --- Image ops --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,variants", [
    ("horizontal", lambda x: [x, x[:, ::-1]]),
    ("vertical", lambda x: [x[::-1], x]),
    ("both", lambda x: [x, x[:, ::-1], x[::-1], x[::-1, ::-1]]),
], ids=["horizontal", "vertical", "both"])
def test_flip_flips_some_examples_and_leaves_others(mode, variants):
    x = _ramp_image(64)
    out = augment_batch(x, [aug.Flip(op="flip", mode=mode)], 0, 0.0, 1.0)
    expected = variants(x[0])
    which = [[np.array_equal(o, v) for v in expected].index(True) for o in out]
    counts = np.bincount(which, minlength=len(expected))
    assert np.all(counts >= 64 // len(expected) // 3), f"{mode}: outcomes {counts}"


def test_crop_moves_each_image_by_its_own_integer_offset_and_fills_with_the_mean():
    x, p = _ramp_image(64), 2
    out = augment_batch(x, [aug.Crop(op="crop", padding=p)], 0, -1.0, 1.0)[..., 0]
    offsets = set()
    for o in out:
        rows, cols = np.nonzero(o != -1.0)
        source = o[rows, cols].astype(int) - 1
        dy, dx = set(rows - source // 8), set(cols - source % 8)
        assert len(dy) == len(dx) == 1, "a crop moves the whole image by one offset"
        dy, dx = dy.pop(), dx.pop()
        assert abs(dy) <= p and abs(dx) <= p
        assert np.sum(o == -1.0) == 64 - (8 - abs(dy)) * (8 - abs(dx))
        offsets.add((dy, dx))
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(-p, p + 1))
    assert len(offsets) >= 12


def test_translation_moves_within_its_range_and_fills_with_the_mean():
    c, mean = 1.0, 0.25
    x = np.full((64, 8, 8, 1), c, np.float32)
    out = augment_batch(x, [aug.Translation(op="translation", fraction=0.25)], 0, mean, 1.0)
    assert out.shape == x.shape
    assert np.all(out >= mean - 1e-5) and np.all(out <= c + 1e-5)
    # Bilinear reads with the mean outside: the filled mass is the area moved out, at most
    # 2 pixels each way here (0.25 of 8); the middle 4x4 never reads outside.
    filled = ((c - out) / (c - mean)).sum(axis=(1, 2, 3))
    assert np.all(filled <= 64 - 6 * 6 + 1e-3)
    np.testing.assert_allclose(out[:, 2:6, 2:6], c, atol=1e-5)
    assert np.sum(filled > 1) >= 32 and len(np.unique(filled.round(4))) >= 32
    # Both axes move: the fill reaches the top or bottom rows of some images, the left or right
    # columns of others.
    rows_filled = np.any(out[:, [0, -1], 2:6] < c - 0.01, axis=(1, 2, 3))
    cols_filled = np.any(out[:, 2:6, [0, -1]] < c - 0.01, axis=(1, 2, 3))
    assert np.sum(rows_filled) >= 16 and np.sum(cols_filled) >= 16


def test_rotation_keeps_the_inscribed_disc_and_fills_the_corners_with_the_mean():
    c, mean, size = 1.0, 0.25, 16
    x = np.full((64, size, size, 1), c, np.float32)
    out = augment_batch(x, [aug.Rotation(op="rotation", degrees=180.0)], 0, mean, 1.0)[..., 0]
    assert out.shape == (64, size, size)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.hypot(yy, xx) <= 7.0  # reads inside the image at any angle
    np.testing.assert_allclose(out[:, disc], c, atol=1e-4)
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.sum(np.all(corners == mean, axis=1)) >= 32  # large angles move corners outside
    assert _distinct(out) >= 32


@pytest.mark.parametrize("degrees", [90.0, 10.0])
def test_rotation_turns_each_image_by_its_own_angle_within_the_range(degrees):
    size, radius = 17, 5
    x = np.zeros((64, size, size, 1), np.float32)
    x[:, size // 2, size // 2 + radius] = 1.0  # a dot to the right of the centre
    out = augment_batch(x, [aug.Rotation(op="rotation", degrees=degrees)], 0, 0.0, 1.0)[..., 0]
    yy, xx = np.mgrid[:size, :size] - size // 2
    mass = out.sum(axis=(1, 2))
    cy, cx = (out * yy).sum(axis=(1, 2)) / mass, (out * xx).sum(axis=(1, 2)) / mass
    # Bilinear sampling blurs the dot but keeps its centroid within a degree or two.
    np.testing.assert_allclose(np.hypot(cy, cx), radius, atol=0.2)
    angles = np.degrees(np.arctan2(cy, cx))
    assert np.all(np.abs(angles) <= degrees + 3)
    assert angles.min() < -0.8 * degrees and angles.max() > 0.8 * degrees
    assert len(np.unique(angles.round(2))) >= 48


def test_zoom_in_keeps_the_image_and_zoom_out_fills_the_border_with_the_mean():
    c, mean = 1.0, 0.25
    x = np.full((64, 8, 8, 1), c, np.float32)
    out = augment_batch(x, [aug.Zoom(op="zoom", fraction=0.5)], 0, mean, 1.0)[..., 0]
    np.testing.assert_allclose(out[:, 3:5, 3:5], c, atol=1e-5)
    zoomed_in = np.all(np.abs(out - c) < 1e-5, axis=(1, 2))
    corners_filled = np.all(out[:, [0, 0, -1, -1], [0, -1, 0, -1]] == mean, axis=1)
    assert np.sum(zoomed_in) >= 10 and np.sum(corners_filled) >= 10
    # Every zoom-in of a constant image is the same image, so only the zoom-outs (about half,
    # drawn by the stream, which the process's global seed also enters) count; one draw for
    # the whole batch would give a single image.
    assert _distinct(out) >= 12


def test_contrast_scales_each_image_about_its_own_mean():
    x, mean, std = _real("digits", 32)
    out = augment_batch(x, [aug.Contrast(op="contrast", factor=0.3)], 0, mean, std)
    centre = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2), keepdims=True), centre, atol=1e-4)
    factors = []
    for o, xi, ci in zip(out, x, centre, strict=True):
        spread = np.abs(xi - ci) > 1
        ratio = (o - ci)[spread] / (xi - ci)[spread]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
        factors.append(ratio[0])
    assert np.all(np.abs(np.array(factors) - 1) <= 0.3 + 1e-5)
    assert len(np.unique(np.round(factors, 4))) >= 24


def test_brightness_adds_one_offset_per_image_in_units_of_the_std():
    x, mean, std = _real("digits", 32)
    out = augment_batch(x, [aug.Brightness(op="brightness", delta=0.2)], 0, mean, std)
    offsets = (out - x).reshape(32, -1)
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(offsets.shape[1], 1), atol=1e-4)
    offsets = offsets[:, 0]
    assert np.all(np.abs(offsets) <= 0.2 * std + 1e-4)
    assert np.max(np.abs(offsets)) > 0.2  # would be at most 0.2 if std were ignored
    assert len(np.unique(offsets.round(4))) >= 24


def test_cutout_fills_a_square_with_the_mean():
    mean, size = 7.0, 3
    out = augment_batch(np.zeros((64, 8, 8, 1), np.float32),
                        [aug.Cutout(op="cutout", size=size)], 0, mean, 1.0)[..., 0]
    boxes = set()
    for o in out:
        assert set(np.unique(o)) == {0.0, mean}
        rows, cols = np.nonzero(o == mean)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        assert np.all(o[top:bottom + 1, left:right + 1] == mean)  # one filled rectangle
        assert len(rows) == (bottom - top + 1) * (right - left + 1)
        # A size x size square, cut by the border when its centre is on the edge.
        assert 2 <= bottom - top + 1 <= size and 2 <= right - left + 1 <= size
        boxes.add((top, left))
    assert len(boxes) >= 24


# --- Sequence ops -----------------------------------------------------------------------------


def test_shift_moves_each_sequence_by_its_own_integer_and_fills_with_the_mean():
    x, m, mean = _ramp_sequence(64), 3, -1.0
    out = augment_batch(x, [aug.Shift(op="shift", max_shift=m)], 0, mean, 1.0)[..., 0]
    shifts = []
    for o in out:
        valid = np.nonzero(o != mean)[0]
        k = set(valid + 1 - o[valid].astype(int))
        assert len(k) == 1, "a shift moves the whole sequence by one offset"
        k = k.pop()
        assert abs(k) <= m
        filled = np.nonzero(o == mean)[0]
        expected = np.arange(k) if k > 0 else np.arange(40 + k, 40)
        np.testing.assert_array_equal(filled, expected)
        shifts.append(k)
    assert set(shifts) == set(range(-m, m + 1))


@pytest.mark.parametrize("shape", [(64, 40, 1), (16, 8, 8, 1)])
def test_noise_has_the_asked_std_in_units_of_the_training_std(shape):
    std, stddev = 2.0, 0.5
    out = augment_batch(np.zeros(shape, np.float32), [aug.Noise(op="noise", stddev=stddev)], 0,
                        0.0, std)
    assert abs(out.std() - stddev * std) < 0.05 * stddev * std
    assert abs(out.mean()) < 0.05
    assert _distinct(out) == shape[0]


def test_scale_scales_each_sequence_about_the_mean():
    x, mean, std = _real("mnist1d", 32)
    out = augment_batch(x, [aug.Scale(op="scale", factor=0.2)], 0, mean, std)
    ratio = ((out - mean) / (x - mean)).reshape(32, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(ratio.shape[1], 1), rtol=1e-3)
    assert np.all(np.abs(ratio[:, 0] - 1) <= 0.2 + 1e-5)
    assert len(np.unique(ratio[:, 0].round(4))) >= 24


def test_mask_fills_one_span_with_the_mean():
    mean, longest = 5.0, 6
    out = augment_batch(np.zeros((64, 40, 1), np.float32),
                        [aug.Mask(op="mask", max_length=longest)], 0, mean, 1.0)[..., 0]
    spans = set()
    for o in out:
        filled = np.nonzero(o == mean)[0]
        assert 1 <= len(filled) <= longest
        np.testing.assert_array_equal(filled, np.arange(filled[0], filled[0] + len(filled)))
        spans.add((filled[0], len(filled)))
    assert len({length for _, length in spans}) == longest and len(spans) >= 24


# --- In the pipeline ----------------------------------------------------------------------------


def test_the_pipeline_augments_whole_batches_and_keeps_static_shapes():
    splits = load_dataset("mnist1d", 0.1)
    ops = _ops("mnist1d/cnn_paper", "[{op: shift}, {op: scale}, {op: noise}]")
    seen = []

    def augment(ds):
        seen.append(ds.element_spec[0].shape.as_list())
        return augment_dataset(ds, ops, 7, 0.0, 1.0)

    x, y = splits.x_train[:250], splits.y_train[:250]
    ds = make_dataset(x, y, 10, 100, augment=augment)
    assert seen == [[None, 40, 1]]
    assert ds.element_spec[0].shape.as_list() == [None, 40, 1]
    batches = [b.numpy() for b, _ in ds]
    assert [len(b) for b in batches] == [100, 100, 50]  # no remainder dropped
    assert all(_distinct(b) == len(b) and not np.allclose(b, xb)
               for b, xb in zip(batches, np.split(x, [100, 200]), strict=True))
    # augment_batch is the same code: the first batch of the stream, for the same inputs.
    np.testing.assert_array_equal(batches[0], augment_batch(x[:100], ops, 7, 0.0, 1.0))


def test_augment_dataset_refuses_unbatched_examples():
    splits = load_dataset("digits", 0.1)
    ds = make_dataset(splits.x_train, splits.y_train, 10, 32).unbatch()
    with pytest.raises(ValueError, match="batched dataset"):
        augment_dataset(ds, [aug.Rotation(op="rotation")], 0, 0.0, 1.0)


def test_each_epoch_draws_new_augmentations_deterministically():
    from zoo.training.execution import seed_everything

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


# --- Recipes ------------------------------------------------------------------------------------


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
