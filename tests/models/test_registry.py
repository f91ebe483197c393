"""Every registered model: forward shape, finite outputs, save/load round trip; the registry."""

from __future__ import annotations

import typing

import keras
import numpy as np
import pytest

from zoo.errors import RecipeError, UnknownNameError
from zoo.models import _blocks, build_model, get_model_spec, model_names, register_model
from zoo.registry import models as registry_module

SEQUENCE, IMAGE = (40, 1), (8, 8, 1)


def _input_shapes(name: str):
    return [SEQUENCE] if name == "cnn_paper" else [SEQUENCE, IMAGE]


CASES = [(name, shape) for name in model_names() for shape in _input_shapes(name)]


@pytest.mark.parametrize("name,shape", CASES, ids=[f"{n}-{len(s)}d" for n, s in CASES])
def test_forward_save_load(name, shape, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, *shape)).astype(np.float32)
    model = build_model(name, {}, input_shape=shape, num_classes=7,
                        standardize=(np.zeros(1, np.float32), np.ones(1, np.float32)))
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    assert probabilities.shape == (5, 7)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), probabilities, rtol=1e-5, atol=1e-6)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_cnn_paper_matches_the_paper():
    model = build_model("cnn_paper", {}, input_shape=SEQUENCE, num_classes=10)
    assert model.count_params() == 5210  # the paper's code: 150 + 1900 + 1900 + 1260
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3]
    assert all(c.strides == (2,) and c.filters == 25 for c in convs)


def test_cnn_picks_conv_rank_from_the_data():
    seq = build_model("cnn", {}, input_shape=SEQUENCE, num_classes=3)
    img = build_model("cnn", {}, input_shape=IMAGE, num_classes=3)
    assert any(isinstance(layer, keras.layers.Conv1D) for layer in seq.layers)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in img.layers)


def test_cnn_paper_refuses_images():
    with pytest.raises(RecipeError, match="cnn_paper takes sequences"):
        build_model("cnn_paper", {}, input_shape=IMAGE, num_classes=10)


def test_layer_names_are_deterministic():
    first = build_model("cnn", {"residual": True}, input_shape=IMAGE, num_classes=3)
    second = build_model("cnn", {"residual": True}, input_shape=IMAGE, num_classes=3)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered already"):
        register_model(lambda x, n, r, /: x, name="mlp")
    assert "mlp" in model_names()


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownNameError) as caught:
        get_model_spec("resnet")
    for name in ("cnn", "cnn_paper", "linear", "mlp"):
        assert name in str(caught.value)


def test_builder_arguments_come_from_the_signature():
    spec = get_model_spec("mlp")
    assert spec.arg_names == ["widths", "activation", "activation_alpha", "normalization",
                              "norm_position", "norm_groups", "dropout", "residual",
                              "initializer"]
    assert spec.defaults()["widths"] == [128, 128]
    with pytest.raises(TypeError, match="needs a default"):
        registry_module._args_model("bad", lambda x, n, r, /, *, width: x)


@pytest.mark.parametrize("alias,table", [
    (_blocks.Activation, _blocks.ACTIVATIONS),
    (_blocks.Normalization, _blocks.NORMALIZATIONS),
    (_blocks.Initializer, _blocks.INITIALIZERS),
])
def test_lookup_tables_match_the_allowed_values(alias, table):
    assert set(typing.get_args(alias)) == set(table)


# Pooling and heads are keyed by (value, rank), and `strided` and `none` are not in the pool
# table at all (the builder adds a conv, or nothing), so a set comparison cannot show that a
# value works. These build the cnn for every allowed value at both ranks instead.
RANKS = {1: SEQUENCE, 2: IMAGE}


def _one_block_cnn(rank: int, **args):
    return build_model("cnn", {"widths": [4], "convs_per_block": 1, **args},
                       input_shape=RANKS[rank], num_classes=3)


@pytest.mark.parametrize("rank", sorted(RANKS))
@pytest.mark.parametrize("pooling", typing.get_args(_blocks.Pooling))
def test_every_pooling_builds_and_downsamples(pooling, rank):
    model = _one_block_cnn(rank, pooling=pooling)
    before = model.get_layer("block1_conv1_act").output.shape[1:-1]
    after = model.get_layer("head").input.shape[1:-1]
    # `none` is the one value that keeps the resolution. `_blocks.pool` returns no layer for a
    # value missing from `_POOLS`, so a missing (value, rank) entry shows up here as no halving.
    halved = tuple((size + 1) // 2 for size in before)
    assert tuple(after) == (tuple(before) if pooling == "none" else halved), pooling
    if (pooling, rank) in _blocks._POOLS:
        assert type(model.get_layer("block1_pool")) is _blocks._POOLS[(pooling, rank)]


@pytest.mark.parametrize("rank", sorted(RANKS))
@pytest.mark.parametrize("head", typing.get_args(_blocks.Head))
def test_every_head_builds_from_its_table(head, rank):
    model = _one_block_cnn(rank, head=head)
    layer = model.get_layer("head")
    assert type(layer) is _blocks._HEADS[(head, rank)]
    assert len(layer.output.shape) == 2  # (batch, features), what the classifier takes


def test_pool_and_head_tables_hold_only_allowed_values():
    assert {kind for kind, _ in _blocks._POOLS} <= set(typing.get_args(_blocks.Pooling))
    assert {kind for kind, _ in _blocks._HEADS} <= set(typing.get_args(_blocks.Head))
    assert {rank for _, rank in (*_blocks._POOLS, *_blocks._HEADS)} <= set(RANKS)


def test_regularization_adds_losses():
    plain = build_model("mlp", {}, input_shape=SEQUENCE, num_classes=3)
    penalized = build_model("mlp", {}, input_shape=SEQUENCE, num_classes=3, l1=1e-3, l2=1e-3)
    assert not plain.losses
    assert len(penalized.losses) == 3  # two hidden kernels and the classifier
