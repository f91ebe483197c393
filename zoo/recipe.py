"""Recipes: a typed schema, YAML loading with `extends`, dotted overrides and a fingerprint.

A recipe is validated completely before anything trains: unknown keys, wrong types and values out
of range raise `RecipeError` with one line naming the file, the dotted key, what was received and
what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from zoo import paths
from zoo.augment_ops import AugmentationOp, check_ops_fit
from zoo.errors import RecipeError, UnknownNameError, ZooDeprecation

# Keys that label a run, drive a search or only observe the training rather than configure it;
# the fingerprint leaves them out so that runs of one configuration over several seeds (and with
# monitoring on or off, which trains the same weights) share a fingerprint.
_NOT_FINGERPRINTED = ("name", "seed", "tune", "monitor")
# Keys added after recipes were fingerprinted (and models shipped): at their default they are
# left out, so those recipes keep their fingerprint.
_FINGERPRINTED_UNLESS_DEFAULT = {("training", "precision"): "float32",
                                 ("training", "distribute"): "none", ("data", "subset"): None,
                                 ("data", "shuffle"): True}
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "cosine", "plateau")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A metric that early stopping, the plateau schedule or a search watches.
WatchedMetric = Literal["val_loss", "val_accuracy", "loss", "accuracy"]


class EarlyStopping(_Section):
    """The `regularization.early_stopping` section."""

    monitor: WatchedMetric = Field(
        "val_loss", description="The metric watched: val_loss, val_accuracy, loss or accuracy "
        "(val_* need a validation split). Default: val_loss.")
    patience: PositiveInt = Field(
        10, description="Epochs without an improvement before training stops, an integer > 0. "
        "Default: 10.")
    min_delta: NonNegativeFloat = Field(
        0.0, description="The smallest change of the metric that counts as an improvement, "
        ">= 0. Default: 0.0.")
    restore_best_weights: bool = Field(
        True, description="End training with the weights of the best epoch rather than those "
        "of the last; true or false. Default: true.")


class DataSection(_Section):
    """The `data` section."""

    dataset: str = Field(
        "mnist1d", description="The data set: mnist1d or digits (embedded in the package), "
        "fashion_mnist (its IDX files on this machine: Debian's dataset-fashion-mnist or Keras' "
        "cache; `make data`), or tfds:<name> for a TensorFlow Datasets builder such as "
        "tfds:mnist or tfds:cifar10 (`zoo list datasets`). Default: mnist1d.")
    validation_split: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.1, description="Fraction of the training split held out for validation, in [0, 1), "
        "stratified and carved with a fixed split seed that is the same for every recipe; 0 "
        "holds out nothing, so no val_* metrics exist and early stopping, a plateau schedule or "
        "a tune objective that watches one is refused. Default: 0.1.")
    subset: PositiveInt | None = Field(
        None, description="Train on a fixed subset of this many examples of the training "
        "split, stratified by class and the same for every recipe and seed (validation is then "
        "carved from it; the test split stays whole): quick experiments and tests on a large "
        "data set. Default: none (the whole training split).")
    batch_size: PositiveInt = Field(
        100, description="Examples per optimizer step, an integer > 0. Default: 100.")
    shuffle: bool = Field(
        True, description="Walk the training examples in a new seeded order each epoch; false "
        "walks them in their stored order every epoch, as the MNIST-1D paper's reference loop "
        "does. Default: true.")
    standardize: bool = Field(
        True, description="Standardize each input channel with the mean and variance of the "
        "training split, as the model's first layer (so the saved model takes raw inputs); true "
        "or false. Default: true.")
    augmentation: list[AugmentationOp] = Field(
        [], description="Training-time augmentation: a list of ops such as {op: shift, "
        "max_shift: 4} (docs/recipes.md lists them), seeded from the recipe seed and applied to "
        "training data only; ops that do not fit the data are refused. Default: [] (none).")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from zoo.registry.datasets import check_dataset_name

        try:
            check_dataset_name(value)
        except UnknownNameError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _augmentation_fits_the_data(self) -> DataSection:
        from zoo.registry.datasets import dataset_kind

        if self.augmentation:
            check_ops_fit(self.augmentation, dataset_kind(self.dataset), self.dataset)
        return self


class ModelSection(BaseModel):
    """`name` picks a registered builder; every other key is an argument of that builder and is
    validated against the builder's own signature (see `zoo.registry.models`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(
        "mlp", description="The registered builder that makes the model (`zoo list models`); "
        "every other model.* key is an argument of that builder, and a key it does not take is "
        "refused. Default: mlp.")

    @property
    def args(self) -> dict[str, Any]:
        """The builder's arguments: every `model.*` key but `name` (in a loaded recipe, with the
        builder's defaults filled in)."""
        return dict(self.model_extra or {})


class RegularizationSection(_Section):
    """The `regularization` section."""

    l1: NonNegativeFloat = Field(
        0.0, description="L1 penalty on every dense and conv kernel, >= 0; above 0 the run also "
        "logs near_zero_weights, the fraction of weights below 1e-3, every epoch. Default: 0.0.")
    l2: NonNegativeFloat = Field(
        0.0, description="L2 penalty on every dense and conv kernel, >= 0. Default: 0.0.")
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="Label smoothing of the crossentropy loss, in [0, 1); the mse loss "
        "ignores it. Default: 0.0.")
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop training when a metric stops improving: a mapping of the "
        "early_stopping keys ({} takes their defaults), or null. Default: none (train for the "
        "whole budget).")


class OptimizerSection(_Section):
    """The `optimizer` section."""

    name: Literal[OPTIMIZERS] = Field(
        "adam", description="The optimizer: sgd, momentum (SGD with momentum), nesterov, "
        "adagrad, rmsprop, adam or adamw. Default: adam.")
    learning_rate: PositiveFloat = Field(
        1e-3, description="The base learning rate, > 0, which the schedule and the warmup "
        "scale. Default: 0.001.")
    schedule: Literal[SCHEDULES] = Field(
        "constant", description="How the learning rate changes: constant; step, exponential or "
        "inverse_time decay by epoch; cosine decay to 0 over the whole run; or plateau, which "
        "drops it when `monitor` stalls; the rate is logged every epoch. Default: constant.")
    warmup_epochs: NonNegativeInt = Field(
        0, description="Epochs of linear warmup from near 0 to the learning rate before the "
        "schedule starts; works with every schedule, and 0 means none. Default: 0.")
    clipnorm: PositiveFloat | None = Field(
        None, description="Clip the gradient of each weight tensor to this norm, > 0. "
        "Default: none (no clipping).")
    clipvalue: PositiveFloat | None = Field(
        None, description="Clip every gradient element to [-clipvalue, clipvalue], > 0. "
        "Default: none (no clipping).")
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.9, description="Momentum of the momentum and nesterov optimizers, in [0, 1). "
        "Default: 0.9.")
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.9, description="Decay of the first-moment average of adam and adamw, in [0, 1). "
        "Default: 0.9.")
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.999, description="Decay of the second-moment average of adam and adamw, in [0, 1). "
        "Default: 0.999.")
    rho: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.9, description="Decay of the squared-gradient average of rmsprop, in [0, 1). "
        "Default: 0.9.")
    epsilon: PositiveFloat = Field(
        1e-7, description="Constant added to the denominator of adam, adamw, adagrad and "
        "rmsprop for numerical stability, > 0. Default: 1e-07.")
    weight_decay: NonNegativeFloat = Field(
        0.0, description="Decoupled weight decay of adamw, >= 0; the other optimizers ignore "
        "it. Default: 0.0.")
    drop_every: PositiveInt = Field(
        10, description="step schedule: multiply the rate by `factor` every this many epochs, "
        "an integer > 0. Default: 10.")
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.1, description="step and plateau schedules: what each drop multiplies the rate by, "
        "in (0, 1). Default: 0.1.")
    decay_rate: PositiveFloat = Field(
        0.9, description="exponential schedule: the rate is lr * decay_rate^epoch; "
        "inverse_time: lr / (1 + decay_rate * epoch); > 0. Default: 0.9.")
    monitor: WatchedMetric = Field(
        "val_loss", description="plateau schedule: the metric watched, val_loss, val_accuracy, "
        "loss or accuracy. Default: val_loss.")
    patience: PositiveInt = Field(
        5, description="plateau schedule: epochs without an improvement of at least "
        "`min_delta` before the rate is multiplied by `factor`, an integer > 0. Default: 5.")
    min_delta: NonNegativeFloat = Field(
        0.0, description="plateau schedule: the smallest change of `monitor` that counts as an "
        "improvement, >= 0. Default: 0.0.")


class TrainingSection(_Section):
    """The `training` section."""

    epochs: PositiveInt = Field(
        30, description="Passes over the training split, an integer > 0; `steps` wins when "
        "set. Default: 30.")
    steps: PositiveInt | None = Field(
        None, description="Optimizer steps to train for, an integer > 0 (papers often state "
        "their budget so); when set it wins over `epochs`, which becomes ceil(steps / batches "
        "per epoch). Default: none (train for `epochs`).")
    loss: Literal["crossentropy", "mse"] = Field(
        "crossentropy", description="crossentropy (softmax crossentropy) or mse (mean squared "
        "error on one-hot targets). Default: crossentropy.")
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="float32, or Keras mixed precision: mixed_float16 (GPUs; with "
        "dynamic loss scaling) or mixed_bfloat16 (GPUs and CPUs that have it), which compute "
        "in 16 bits and keep the weights, the softmax and the loss in float32. Default: "
        "float32.")
    distribute: Literal["none", "mirrored"] = Field(
        "none", description="none, or mirrored: tf.distribute.MirroredStrategy over the "
        "visible GPUs (or logical CPU devices), each batch split between them. Default: none.")


class MonitorSection(_Section):
    """The `monitor` section."""

    enabled: bool = Field(
        False, description="Run the per-layer training monitors (update ratios, gradient norms, "
        "dead and saturated units, warnings and figures; docs/diagnostics.md); true or false. "
        "They only observe: the trained weights are the same either way. Default: false.")
    every: PositiveInt = Field(
        1, description="Run the monitors every this many epochs, an integer > 0. Default: 1.")


# Keys renamed, old -> new: recipes and overrides that use an old key still load, with a
# warning, until zoo 0.3. (`diagnostics:` named the monitor's section while `zoo.diagnostics`
# holds the gradient check and the sanity checks.)
RENAMED_KEYS = {"diagnostics.monitor": "monitor.enabled", "diagnostics.every": "monitor.every"}


# Keys that several kinds of dimension share get one text each, so that the reference of recipe
# keys (zoo.recipe_keys) shows each of them as one row.
_DIMENSION_TYPE = ("The kind of dimension: float or int (a range from min to max), choice (one of "
                   "values) or bool (true or false). Required.")
_DIMENSION_MIN = "float and int dimensions: the lower end of the range. Required."
_DIMENSION_MAX = "float and int dimensions: the upper end of the range, above min. Required."


class FloatDimension(_Section):
    """A `type: float` dimension of the `tune.space` section."""

    type: Literal["float"] = Field(description=_DIMENSION_TYPE)
    min: float = Field(description=_DIMENSION_MIN)
    max: float = Field(description=_DIMENSION_MAX)
    sampling: Literal["linear", "log"] = Field(
        "linear", description="float dimensions: draw evenly (linear) or evenly in the "
        "logarithm (log, which needs min > 0). Default: linear.")

    @model_validator(mode="after")
    def _ordered(self) -> FloatDimension:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0 (received min={self.min})")
        return self


class IntDimension(_Section):
    """A `type: int` dimension of the `tune.space` section."""

    type: Literal["int"] = Field(description=_DIMENSION_TYPE)
    min: int = Field(description=_DIMENSION_MIN)
    max: int = Field(description=_DIMENSION_MAX)
    step: PositiveInt = Field(
        1, description="int dimensions: the spacing of the values drawn, an integer > 0. "
        "Default: 1.")

    @model_validator(mode="after")
    def _ordered(self) -> IntDimension:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class ChoiceDimension(_Section):
    """A `type: choice` dimension of the `tune.space` section."""

    type: Literal["choice"] = Field(description=_DIMENSION_TYPE)
    values: list[StrictBool | StrictInt | StrictFloat | str] = Field(
        min_length=1, description="choice dimensions: the values to choose from (numbers, "
        "strings or booleans), at least one. Required.")


class BoolDimension(_Section):
    """A `type: bool` dimension of the `tune.space` section."""

    type: Literal["bool"] = Field(description=_DIMENSION_TYPE)


Dimension = Annotated[FloatDimension | IntDimension | ChoiceDimension | BoolDimension,
                      Field(discriminator="type")]


class Objective(_Section):
    """The `tune.objective` section."""

    name: WatchedMetric = Field(
        "val_accuracy", description="The metric the search optimizes: val_accuracy, val_loss, "
        "accuracy or loss. Default: val_accuracy.")
    direction: Literal["max", "min"] = Field(
        "max", description="Whether a higher (max) or a lower (min) value is better. "
        "Default: max.")


class TuneSection(_Section):
    """The `tune` section."""

    algorithm: Literal["random", "grid", "bayesian", "hyperband"] = Field(
        "random", description="The Keras Tuner search: random, grid, bayesian (a Gaussian "
        "process) or hyperband. Default: random.")
    objective: Objective = Field(
        Objective(), description="The metric to optimize and its direction, as {name, "
        "direction}; a metric name alone (val_loss) is minimized if it is a loss and maximized "
        "otherwise. Default: {name: val_accuracy, direction: max}.")
    max_trials: PositiveInt = Field(
        10, description="The most trials (configurations) the search trains, an integer > 0. "
        "Default: 10.")
    executions_per_trial: PositiveInt = Field(
        1, description="Trainings per trial, with seeds seed, seed + 1, ...; the trial scores "
        "their mean. Default: 1.")
    max_epochs: PositiveInt = Field(
        30, description="hyperband: the largest budget of one trial in epochs (it sets "
        "training.epochs per trial), an integer > 0. Default: 30.")
    seed: NonNegativeInt = Field(
        0, description="Seed of the search algorithm's own draws (training uses the recipe "
        "seed), an integer >= 0. Default: 0.")
    space: dict[str, Dimension] = Field(
        {}, description="The keys the search varies: dotted recipe keys, each mapped to a "
        "dimension such as {type: float, min: 0.0001, max: 0.1, sampling: log}; every value in "
        "a range must be valid for its key. Default: {} (nothing to search).")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, value: Any) -> Any:
        # `objective: val_loss` is accepted for {name: val_loss, direction: min}.
        if isinstance(value, str):
            return {"name": value, "direction": "min" if value.endswith("loss") else "max"}
        return value


class Recipe(_Section):
    """A whole recipe: the top-level keys (`name`, `seed`) and every section."""

    name: str = Field(
        description="The run's name in MLflow and the folder of its model files; never "
        "inherited through extends. Default: the recipe's short name (mnist1d/cnn for "
        "recipes/mnist1d/cnn.yaml).")
    seed: NonNegativeInt = Field(
        0, description="Seeds Python, NumPy, TensorFlow, the shuffling and the augmentation "
        "(the validation split never changes with it), an integer >= 0. Default: 0.")
    data: DataSection = Field(
        DataSection(), description="The data set, its validation split, batching, "
        "standardization and augmentation.")
    model: ModelSection = Field(
        ModelSection(), description="The architecture: model.name picks a registered builder "
        "and the other model.* keys are that builder's own arguments, so their defaults depend "
        "on the builder.")
    regularization: RegularizationSection = Field(
        RegularizationSection(), description="Kernel penalties, label smoothing and early "
        "stopping.")
    optimizer: OptimizerSection = Field(
        OptimizerSection(), description="The optimizer and its own keys, the learning rate, "
        "its schedule and warmup, and gradient clipping.")
    training: TrainingSection = Field(
        TrainingSection(), description="How long training runs and the loss it minimizes.")
    tune: TuneSection = Field(
        TuneSection(), description="The search `zoo tune` runs; other commands ignore it, and "
        "the fingerprint leaves it out.")
    monitor: MonitorSection = Field(
        MonitorSection(), description="Per-layer training monitors; they only observe, so "
        "the fingerprint leaves them out. (Before zoo 0.2 this section was called diagnostics; "
        "diagnostics.monitor and diagnostics.every still load, with a warning.)")

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The YAML file the recipe came from (None when built from a dict)."""
        return self._source

    def resolved(self) -> dict[str, Any]:
        """The complete recipe as plain data, every default filled in."""
        return self.model_dump(mode="json")

    @property
    def fingerprint(self) -> str:
        """sha256 of the resolved recipe without name, seed, tune and monitor: it identifies a
        configuration."""
        config = {k: v for k, v in self.resolved().items() if k not in _NOT_FINGERPRINTED}
        for (section, key), default in _FINGERPRINTED_UNLESS_DEFAULT.items():
            values = config.get(section, {})
            if key in values and values[key] == default:  # a recipe from before the key came
                values.pop(key)  # keeps its id
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def flat(self) -> dict[str, Any]:
        """The resolved recipe flattened to dotted keys (MLflow params, comparison tables)."""
        return flatten(self.resolved())

    def to_yaml(self) -> str:
        """The resolved recipe as YAML, keys in schema order (as a run logs it in `recipe.yaml`)."""
        return yaml.safe_dump(self.resolved(), sort_keys=False)

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> Recipe:
        """A new recipe with dotted overrides (strings or a mapping) applied and validated."""
        items = (list(overrides.items()) if isinstance(overrides, Mapping)
                 else _parse_overrides(overrides))
        raw = self.resolved()
        for key, value in items:
            _set_dotted(raw, key, value)
        return validate(raw, source=self._source, override_keys={key for key, _ in items})


def training_length(recipe: Recipe, train_examples: int) -> tuple[int, int]:
    """(epochs, batches per epoch) for a training split of `train_examples`;
    `training.steps`, when set, wins over `training.epochs`."""
    steps_per_epoch = math.ceil(train_examples / recipe.data.batch_size)
    steps = recipe.training.steps
    epochs = math.ceil(steps / steps_per_epoch) if steps else recipe.training.epochs
    return epochs, steps_per_epoch


def describe_values(values: Mapping[str, Any]) -> str:
    """Recipe values by their last key: `{"model.dropout": 0.3, "optimizer.learning_rate":
    0.0012345}` -> `dropout=0.3 learning_rate=0.001235`, for run names and progress lines."""
    return " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else
                    f"{k.split('.')[-1]}={v}" for k, v in values.items())


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (`data.batch_size`); an empty mapping stays a
    value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# --------------------------------------------------------------------------------------------
# Loading


def resolve_path(name_or_path: str | Path) -> Path:
    """A recipe path, or a short name such as `mnist1d/cnn_paper` under recipes/."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
    else:
        short = paths.recipes_dir() / f"{name_or_path}.yaml"
        if short.is_file():
            return short
    known = ", ".join(list_recipes()) or "(none)"
    raise RecipeError(
        f"recipe not found: {name_or_path}; give a path to a .yaml file or one of: {known}"
    )


def list_recipes() -> list[str]:
    """The short names of the recipes under recipes/ (`mnist1d/cnn_paper`), sorted; overlays, a
    folder deeper, are not among them."""
    root = paths.recipes_dir()
    return sorted(
        str(p.relative_to(root).with_suffix(""))
        for p in root.glob("*/*.yaml")
    )


def short_name(path: Path) -> str:
    """`recipes/mnist1d/cnn_paper.yaml` -> `mnist1d/cnn_paper`; other paths -> their stem."""
    try:
        return str(path.resolve().relative_to(paths.recipes_dir().resolve()).with_suffix(""))
    except ValueError:
        return path.stem


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load, merge (`extends`), override and validate a recipe.

    Args:
        name_or_path: a short name (`mnist1d/cnn_paper`) or a path to a YAML file.
        overrides: `dotted.key=value` strings; values are parsed as YAML.

    Returns:
        The validated `Recipe`.

    Raises:
        RecipeError: the file is missing or malformed, or a key or value is not allowed.
    """
    path = resolve_path(name_or_path)
    raw = _load_with_extends(path, chain=())
    raw.setdefault("name", short_name(path))
    parsed = _parse_overrides(overrides)
    for key, value in parsed:
        _set_dotted(raw, key, value)
    return validate(raw, source=path, override_keys={key for key, _ in parsed})


def validate(raw: dict[str, Any], source: Path | None = None,
             override_keys: set[str] = frozenset()) -> Recipe:
    """Validate plain data as a recipe, builder arguments of `model` included."""
    from zoo.registry.datasets import dataset_kind
    from zoo.registry.models import ArgumentError, get_model_spec

    where = str(source) if source else "recipe"
    raw = _with_renamed_keys(raw, where, override_keys)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(_describe(err, where, override_keys, prefix=())) from None
    try:
        spec = get_model_spec(recipe.model.name)
    except UnknownNameError as err:
        raise RecipeError(
            _one_line(where, "model.name", str(err), recipe.model.name, override_keys)
        ) from None
    try:
        args = spec.validate_args(recipe.model.args)
    except ValidationError as err:
        allowed = ["name", *spec.arg_names]
        raise RecipeError(
            _describe(err, where, override_keys, prefix=("model",), allowed=allowed)
        ) from None
    try:
        spec.check_args(args, dataset_kind(recipe.data.dataset))
    except ArgumentError as err:
        raise RecipeError(_one_line(where, f"model.{err.argument}", err.message,
                                    {}, override_keys)) from None
    resolved = recipe.model_dump(mode="json")
    resolved["model"] = {"name": recipe.model.name, **args}
    final = Recipe.model_validate(resolved)
    _check_validation_metrics(final, where, override_keys)
    _check_space(final, where, override_keys)
    final._source = source
    return final


def _with_renamed_keys(raw: dict[str, Any], where: str,
                       override_keys: set[str]) -> dict[str, Any]:
    """`raw` with the old names of renamed keys (`RENAMED_KEYS`) moved to the new ones, and a
    warning for each; an old key wins over the new one, as the more explicit of the two when a
    recipe extends base defaults."""
    import warnings

    old_sections = {old.split(".")[0] for old in RENAMED_KEYS}
    if not old_sections & raw.keys():
        return raw
    raw = copy.deepcopy(raw)
    for section in old_sections & raw.keys():
        values = raw.pop(section)
        if not isinstance(values, Mapping):
            raise RecipeError(f"{where}: {section}: expected a mapping, received {values!r}")
        for key, value in values.items():
            old = f"{section}.{key}"
            if old not in RENAMED_KEYS:
                raise RecipeError(f"{where}: {old}: unknown key (the {section} section is now "
                                  "monitor; every key: `zoo list keys`)")
            origin = "command line" if old in override_keys else where
            warnings.warn(f"{origin}: recipe key {old} is now {RENAMED_KEYS[old]}; the old name "
                          "is refused from zoo 0.3", ZooDeprecation, stacklevel=3)
            _set_dotted(raw, RENAMED_KEYS[old], value)
    return raw


def _check_validation_metrics(recipe: Recipe, where: str, override_keys: set[str]) -> None:
    """Without a validation split there are no val_* metrics to watch: refuse what needs them
    when the recipe loads, rather than after an epoch of training."""
    if recipe.data.validation_split > 0:
        return
    stopping = recipe.regularization.early_stopping
    watchers = [
        ("regularization.early_stopping.monitor",
         stopping.monitor if stopping is not None else None),
        ("optimizer.monitor",
         recipe.optimizer.monitor if recipe.optimizer.schedule == "plateau" else None),
        ("tune.objective", recipe.tune.objective.name if recipe.tune.space else None),
    ]
    for key, metric in watchers:
        if metric is not None and metric.startswith("val_"):
            raise RecipeError(_one_line(
                where, key, f"watches {metric}, but data.validation_split is 0 (no validation "
                f"split); watch {metric[4:]} or set data.validation_split above 0", metric,
                override_keys | ({key} if "data.validation_split" in override_keys else set())))


def _check_space(recipe: Recipe, where: str, override_keys: set[str]) -> None:
    """Every tuned key must be a recipe key, and every value in its range must be valid."""
    flat = recipe.flat()
    for key, dimension in recipe.tune.space.items():
        origin = f"tune.space.{key}"
        if key not in flat or key.startswith("tune."):
            known = ", ".join(k for k in flat if not k.startswith(("tune.", "name", "seed")))
            raise RecipeError(_one_line(where, origin, f"not a recipe key; tunable keys: {known}",
                                        key, override_keys))
        for value in _corner_values(dimension):
            raw = {k: v for k, v in recipe.resolved().items() if k != "tune"}
            _set_dotted(raw, key, value)
            try:
                validate(raw)
            except RecipeError as err:
                raise RecipeError(_one_line(
                    where, origin, f"the value {value!r} in its range is not allowed: "
                    f"{str(err).split(': ', 2)[-1]}", {}, override_keys)) from None


def _corner_values(dimension) -> list[Any]:
    if dimension.type == "choice":
        return list(dimension.values)
    if dimension.type == "bool":
        return [True, False]
    return [dimension.min, dimension.max]


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise RecipeError(f"{path}: cannot read recipe: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise RecipeError(
            f"{path}: {line}{err.problem}; recipes are plain YAML (loaded with yaml.safe_load), "
            "remove the tag"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{path}: {line}not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: a recipe is a mapping of keys (data:, model:, ...), "
            f"received a {type(data).__name__}"
        )
    return data


def _load_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"{path}: extends: recipes extend each other in a cycle: {cycle}")
    data = _load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(
            f"{path}: extends: expected a path to a YAML file, received {parent!r}"
        )
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise RecipeError(f"{path}: extends: file not found: {parent} (resolved to {parent_path})")
    base = _load_with_extends(parent_path, (*chain, path))
    base.pop("name", None)  # a name belongs to the file that states it, never inherited
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Later keys win; mappings merge key by key; lists and scalars replace."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not _OVERRIDE_KEY.match(key):
            raise RecipeError(
                f"command line: override {item!r} is not of the form dotted.key=value "
                "(e.g. optimizer.learning_rate=0.01)"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise RecipeError(
                f"command line: {key}: value {text!r} is not valid YAML"
            ) from None
        parsed.append((key, value))
    return parsed


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            above = ".".join(parents[: i + 1])
            raise RecipeError(
                f"command line: {key}: {above} is a value ({child!r}), not a section with keys"
            )
        node = child
    node[leaf] = value


# --------------------------------------------------------------------------------------------
# Error messages


def _describe(err: ValidationError, where: str, override_keys: set[str],
              prefix: tuple[str, ...], allowed: list[str] | None = None) -> str:
    issues = err.errors(include_url=False)
    first = issues[0]
    loc = (*prefix, *first["loc"])
    key = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        allowed = allowed if allowed is not None else _allowed_keys(loc[:-1])
        message = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
    elif first["type"] == "missing":
        message = "required key is missing"
    else:
        message = first["msg"].replace("Value error, ", "")
    line = _one_line(where, key, message, first.get("input"), override_keys)
    others = [".".join(str(p) for p in (*prefix, *issue["loc"])) for issue in issues[1:]]
    if others:
        line += f" (also: {', '.join(others)})"
    return line


def _one_line(where: str, key: str, message: str, received: Any, override_keys: set[str]) -> str:
    from_command_line = any(key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.")
                            for k in override_keys)
    origin = "command line" if from_command_line else where
    shown = "" if isinstance(received, dict) else f" (received {received!r})"
    return f"{origin}: {key}: {message}{shown}"


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the schema allows at a dotted location (for 'unknown key' messages)."""
    node: type[BaseModel] | None = Recipe
    for part in loc:
        field = node.model_fields.get(part) if node else None
        annotation = getattr(field, "annotation", None)
        node = next(
            (t for t in (annotation, *getattr(annotation, "__args__", ()))
             if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )
    return list(node.model_fields) if node else []
