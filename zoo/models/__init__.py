"""The model builders, and the one way to build a recipe's model. Importing this package
registers every builder in `zoo.registry.models`."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from zoo.errors import RecipeError
from zoo.models import cnn, linear, mlp  # noqa: F401  (registers the builders)
from zoo.registry.models import (
    ArgumentError,
    ModelSpec,
    get_model_spec,
    model_names,
    register_model,
)

__all__ = ["ArgumentError", "ModelSpec", "build_model", "get_model_spec", "inference_copy",
           "model_for", "model_names", "register_model"]


def model_for(recipe, splits, *, args: Mapping[str, Any] | None = None,
              l1: float | None = None, l2: float | None = None):
    """The model of a recipe (`zoo.recipe.Recipe`) for its data (`zoo.data.Splits`): the one
    way every caller (training, the gradient check, the benchmark) builds it.

    Standardization, when `data.standardize` is on, uses the training split's statistics.
    `args`, `l1` and `l2` replace the recipe's builder arguments and penalties (the gradient
    check turns dropout off and adds a penalty of its own).
    """
    regularization = recipe.regularization
    with _default_seeds_from(recipe.seed):
        return build_model(
            recipe.model.name,
            dict(recipe.model.args if args is None else args),
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            standardize=splits.standardization() if recipe.data.standardize else None,
            l1=regularization.l1 if l1 is None else l1,
            l2=regularization.l2 if l2 is None else l2,
            model_name=recipe.name,
        )


def inference_copy(model):
    """The model without its optimizer state (a third of the file for Adam's two slots): the
    architecture and the trained weights, which load in plain Keras (a warmup schedule in the
    optimizer would need the zoo's code)."""
    # From the config, not keras.models.clone_model: a clone of a compiled model is compiled
    # too, and its optimizer slots would be saved.
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def _default_seeds_from(seed: int) -> Iterator[None]:
    """Keras gives every initializer and dropout layer built without a seed one drawn from
    Python's global `random` (`keras.src.random.seed_generator.make_default_seed`). Any other
    thread drawing from it while a model is built changes that model's weights: in a grid's
    parent process, Keras Tuner's trial ids (`random.randint`, drawn as workers ask for jobs)
    did, and one `make zoo` seed trained other weights than the same seed alone. Within this
    block Keras draws them from a generator of its own, seeded as `keras.utils.set_random_seed`
    seeds the global one, so the seeds are the ones a quiet process draws."""
    from keras.src.random import seed_generator

    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


def build_model(
    name: str,
    args: dict[str, Any],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    standardize: tuple[Any, Any] | None = None,
    l1: float = 0.0,
    l2: float = 0.0,
    model_name: str | None = None,
):
    """Build a registered model that takes raw inputs and returns class probabilities.

    Args:
        name: the registered builder.
        args: the builder's arguments (recipe `model.*` keys other than `name`).
        input_shape: shape of one example, without the batch axis.
        num_classes: size of the softmax output.
        standardize: per-channel (mean, variance) from the training split; when given, the model
            starts with a Normalization layer so it can be fed raw inputs.
        l1, l2: kernel penalties on every dense and conv kernel.
        model_name: the Keras model's name.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        RecipeError: the arguments do not fit each other or the data (`model.<argument>: ...`).
    """
    import keras

    spec = get_model_spec(name)
    typed = spec.typed_args(args)
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = inputs
    if standardize is not None:
        mean, variance = standardize
        x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance,
                                       name="standardize")(x)
    try:
        outputs = spec.builder(x, num_classes, regularizer, **typed)
    except ArgumentError as err:
        raise RecipeError(f"model.{err.argument}: {err.message}") from None
    return keras.Model(inputs, outputs, name=(model_name or name).replace("/", "_"))
