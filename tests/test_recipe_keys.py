"""The reference of recipe keys: complete, described, current in docs/, agreeing with base.yaml."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from zoo import cli, recipe_keys
from zoo.models import get_model_spec, model_names
from zoo.recipe import Recipe, flatten, validate

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "recipe-keys.md"
BASE = REPO / "recipes" / "base.yaml"


def schema_fields(model: type[BaseModel] = Recipe,
                  prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of the schema as (dotted key, field), found independently of the module under
    test: the sections' keys, nested mappings (`regularization.early_stopping.patience`) and the
    kinds of value of a mapping (`tune.space.<key>.min`)."""
    for name, field in model.model_fields.items():
        key = prefix + name
        held = _models(field.annotation)
        if model is Recipe and held:  # a section: its keys are the rows, not itself
            yield from schema_fields(held[0], f"{key}.")
            continue
        yield key, field
        for kind in held:
            yield from schema_fields(kind, f"{key}.")
        if get_origin(field.annotation) is dict:
            for kind in _models(get_args(field.annotation)[1]):
                yield from schema_fields(kind, f"{key}.<key>.")


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field holds itself: `A`, `A | None`, `Annotated[A | B, ...]`."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    union = get_origin(annotation) in (Union, UnionType)
    members = get_args(annotation) if union else (annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def test_the_doc_is_generated_from_the_schema():
    assert DOC.read_text() == recipe_keys.markdown(), (
        f"{DOC.relative_to(REPO)} differs from the recipe schema and the model builders; "
        f"regenerate it with `{recipe_keys.DOCS_COMMAND}` ({recipe_keys.DOCS_SCRIPT})")


def test_the_doc_says_how_it_is_made():
    header = DOC.read_text().splitlines()[2]
    assert "Generated" in header and recipe_keys.DOCS_COMMAND in header


def test_every_schema_field_is_a_row():
    rows = {row.key for row in recipe_keys.recipe_keys()}
    fields = {key for key, _ in schema_fields()}
    assert {"optimizer.learning_rate", "regularization.early_stopping.patience",
            "tune.objective.direction", "tune.space.<key>.sampling", "model.name"} <= fields
    assert fields - rows == set()
    arguments = {f"model.{a}" for name in model_names() for a in get_model_spec(name).arg_names}
    assert rows == fields | arguments


def test_every_field_is_described_and_states_its_default():
    defaults = {row.key: row.default for row in recipe_keys.recipe_keys()}
    for key, field in schema_fields():
        description = field.description or ""
        assert description, f"{key} has no description"
        if field.default is PydanticUndefined:
            expected = r"(Required|Default: .+)\.$"
        elif field.default is None:
            expected = r"Default: none \(.+\)\.$"
        else:
            expected = rf"Default: {re.escape(defaults[key])}( \(.+\))?\.$"
        assert re.search(expected, description), (
            f"{key}: the description must end with its default, as {expected!r} "
            f"(it ends ...{description[-50:]!r})")


def test_sections_are_described():
    for section, text in recipe_keys.section_descriptions().items():
        assert text, f"section {section!r} has no description"


def test_model_keys_come_from_every_builder():
    rows = {row.key: row for row in recipe_keys.recipe_keys()}
    assert rows["model.name"].values == " | ".join(model_names())
    widths = rows["model.widths"]
    assert "cnn: [32, 64]" in widths.default and "mlp: [128, 128]" in widths.default
    assert "units of each hidden layer" in widths.description  # mlp's docstring
    assert "Taken by cnn and mlp" in widths.description
    assert rows["model.channels"].default == "25"
    assert rows["model.channels"].description.endswith("Taken by cnn_paper.")
    assert rows["model.dropout"].values == "float in [0, 1)"


def test_rows_state_types_defaults_and_descriptions():
    rows = {row.key: row for row in recipe_keys.recipe_keys()}
    rate = rows["optimizer.learning_rate"]
    assert (rate.values, rate.default) == ("float > 0", "0.001")
    assert rate.description.startswith("The base learning rate")
    assert "Default:" not in rate.description  # the default column says it already
    clip = rows["optimizer.clipnorm"]
    assert (clip.values, clip.default) == ("float > 0 | null", "null")
    assert clip.description.endswith("Default: none (no clipping).")
    assert rows["data.validation_split"].values == "float in [0, 1)"
    assert rows["tune.space"].values == "mapping of str to {type: float | int | choice | bool}"
    assert rows["tune.space.<key>.min"].values == "float | int"
    assert rows["tune.objective"].default == "{name: val_accuracy, direction: max}"


def test_zoo_list_keys(capsys):
    assert cli.main(["list", "keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["key", "default", "description"]
    rate = next(line for line in lines if line.startswith("optimizer.learning_rate "))
    assert rate.split()[1] == "0.001"
    assert "The base learning rate" in rate
    starts = {line.split()[0] for line in lines[1:] if line and not line[0].isspace()}
    for key, _ in schema_fields():
        assert key in starts, f"zoo list keys does not list {key}"


def test_text_table_fits_its_width():
    lines = recipe_keys.text_table(width=120)
    assert max(len(line) for line in lines) <= 120
    # A key too long for its column stands alone, its default and text on the next line.
    long_key = "regularization.early_stopping.restore_best_weights"
    at = lines.index(long_key)
    assert lines[at + 1].split()[0] == "true"


def test_base_yaml_repeats_the_schema_defaults():
    base = flatten(yaml.safe_load(BASE.read_text()))
    defaults = validate({"name": "base"}).flat()
    for key, value in base.items():
        assert key in defaults, f"{BASE.name}: {key} is not a recipe key"
        assert value == defaults[key], (
            f"{BASE.name}: {key} is {value!r}, the schema's default is {defaults[key]!r}; "
            "change one of them (docs/recipe-keys.md lists the defaults)")


def test_importing_the_reference_loads_no_runtime_module():
    code = ("import sys, zoo.recipe_keys; print(sorted(m for m in ('tensorflow', 'keras', "
            "'mlflow', 'matplotlib', 'zoo.training.trainer', 'zoo.tracking', 'zoo.plots') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"
