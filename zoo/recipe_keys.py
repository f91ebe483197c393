"""The reference of recipe keys, generated from the schema that defines them.

Every dotted key a recipe may set comes with its allowed values, its default and its
description from the pydantic schema in `zoo.recipe` (each field's `description`) and, for the
`model.*` keys, from the signatures and docstrings of the registered builders. So the reference
cannot drift from what the loader accepts: `zoo list keys` prints it as a text table, and
`python -m zoo.recipe_keys` prints docs/recipe-keys.md (`make docs`), which a test keeps current.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import textwrap
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from zoo.recipe import Recipe

if TYPE_CHECKING:
    from zoo.registry.models import ModelSpec

DOCS_COMMAND = "make docs"
DOCS_SCRIPT = "python -m zoo.recipe_keys > docs/recipe-keys.md"
TOP_LEVEL = ""  # the section of the keys outside any section: name, seed
# Between the defaults of one key that differ by builder (`cnn: [32, 64]; mlp: [128, 128]`); the
# tables put each on a line of its own.
_DEFAULTS_SEPARATOR = "; "


@dataclass(frozen=True)
class KeyRow:
    """One recipe key of the reference.

    Args:
        key: the dotted key, e.g. `optimizer.learning_rate`; `<key>` stands for a key the recipe
            chooses (`tune.space.<key>.min`).
        values: the type or the allowed values, e.g. `float > 0` or `batch | layer | none`.
        default: the default as written in YAML (`0.001`, `null`, `[]`), `-` when the key has
            none; `model.*` keys whose default depends on the builder list each builder's.
        description: what the key does and what it accepts. A trailing `Default: X.` sentence
            of the schema is left out when X only repeats `default`.
    """

    key: str
    values: str
    default: str
    description: str

    @property
    def section(self) -> str:
        """The top-level section (`optimizer`), or `TOP_LEVEL` for `name` and `seed`."""
        return self.key.split(".")[0] if "." in self.key else TOP_LEVEL


def recipe_keys() -> Iterator[KeyRow]:
    """Every key a recipe may set, in schema order, sections' nested keys included.

    The `model.*` rows come from the registered builders: importing them imports Keras, so that
    happens only when the `model` section is reached.

    Yields:
        `KeyRow`s: the top-level keys, then each section's keys.
    """
    for name, field in Recipe.model_fields.items():
        section = _model_class(field.annotation)
        if section is None:
            yield _field_row(name, field)
        elif name == "model":
            yield from _model_rows(section)
        else:
            yield from _rows(section, f"{name}.")


def section_descriptions() -> dict[str, str]:
    """The description of each top-level section, keyed by name (`TOP_LEVEL` included)."""
    described = {TOP_LEVEL: "Keys outside any section."}
    for name, field in Recipe.model_fields.items():
        if _model_class(field.annotation) is not None:
            described[name] = field.description or ""
    return described


def text_table(width: int | None = None) -> list[str]:
    """The keys as an aligned text table (`zoo list keys`): key, default, description.

    Args:
        width: columns to fill; default the terminal's width (100 when it is not a terminal).

    Returns:
        The table's lines, a header first.
    """
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = list(recipe_keys())
    # A few long nested keys would otherwise squeeze every description: those get a line of
    # their own, and the other columns start on the next one.
    key_width = min(max(len(row.key) for row in rows), 30)
    default_width = min(max(len(piece) for row in rows for piece in _pieces(row.default)), 16)
    text_width = max(width - key_width - default_width - 4, 40)
    lines = [f"{'key':<{key_width}}  {'default':<{default_width}}  description"]
    for row in rows:
        first = row.key
        if len(row.key) > key_width:
            lines.append(row.key)
            first = ""
        defaults = [line for piece in _pieces(row.default)
                    for line in textwrap.wrap(piece, default_width)]
        texts = textwrap.wrap(row.description, text_width)
        for key, default, text in itertools.zip_longest([first], defaults, texts, fillvalue=""):
            lines.append(f"{key:<{key_width}}  {default:<{default_width}}  {text}".rstrip())
    return lines


def markdown() -> str:
    """The reference as Markdown, one table per section: the text of docs/recipe-keys.md."""
    rows = list(recipe_keys())
    out = [
        "# Recipe keys",
        "",
        f"_Generated by `{DOCS_COMMAND}` (`{DOCS_SCRIPT}`) from the recipe schema in "
        "`zoo/recipe.py` and the model builders in `zoo/models/`: edit those, not this file._",
        "",
        "Every key a recipe may set. A recipe states only what differs from the defaults, and "
        "any key can be overridden on the command line as `dotted.key=value` (the value is "
        "parsed as YAML). `zoo list keys` prints the same table in the terminal; "
        "[recipes.md](recipes.md) explains recipes, augmentation ops and error messages.",
    ]
    for section, description in section_descriptions().items():
        out += ["", f"## {'Top level' if section == TOP_LEVEL else section}", ""]
        if description:
            out += [_markdown_text(description), ""]
        out += ["| key | values | default | description |", "|---|---|---|---|"]
        out += [
            f"| `{_markdown_code(row.key)}` | `{_markdown_code(row.values)}` | "
            f"{_markdown_default(row.default)} | {_markdown_text(row.description)} |"
            for row in rows if row.section == section
        ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Walking the schema


def _rows(model: type[BaseModel], prefix: str) -> Iterator[KeyRow]:
    for name, field in model.model_fields.items():
        key = prefix + name
        yield _field_row(key, field)
        nested = _model_class(field.annotation)
        if nested is not None:
            yield from _rows(nested, f"{key}.")
        for variants in _mapping_value_models(field.annotation):
            # Each kind of value (a float dimension, a choice ...) has keys of its own; keys that
            # several kinds share become one row.
            yield from _merged(row for variant in variants
                               for row in _rows(variant, f"{key}.<key>."))
    # Lists of mappings (data.augmentation's ops) are not walked: docs/recipes.md describes the
    # ops with the kinds of data each fits, which the schema does not hold.


def _field_row(key: str, field: FieldInfo) -> KeyRow:
    default = _default_text(field.default)
    return KeyRow(key, _values_text(field.annotation, field.metadata), default,
                  _without_repeated_default(field.description or "", default))


def _model_rows(section: type[BaseModel]) -> Iterator[KeyRow]:
    from zoo.registry.models import get_model_spec, model_names  # loads the builders: Keras

    names = model_names()
    for row in _rows(section, "model."):
        # The schema knows only that model.name is a string; the registry knows which ones.
        yield replace(row, values=" | ".join(names)) if row.key == "model.name" else row
    yield from _builder_argument_rows([get_model_spec(name) for name in names])


def _builder_argument_rows(specs: list[ModelSpec]) -> Iterator[KeyRow]:
    """One row per builder argument, over every builder that takes it: types and defaults from
    the signatures, the text from the docstrings' `Args:` sections."""
    takers: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        for argument in spec.arg_names:
            takers.setdefault(argument, []).append(spec)
    for argument, by in takers.items():
        fields = {spec.name: spec.args_model.model_fields[argument] for spec in by}
        values = _joined(sorted({_values_text(f.annotation, f.metadata)
                                 for f in fields.values()}), " or ")
        default = _grouped(_by_value({name: _default_text(f.default)
                                      for name, f in fields.items()}), _DEFAULTS_SEPARATOR)
        documented = {spec.name: spec.arg_docs.get(argument) for spec in by}
        texts = _by_value({name: _sentence(text) for name, text in documented.items() if text})
        if len(texts) == 1:  # every builder says the same: one sentence, no builder names
            texts = {text[:1].upper() + text[1:]: names for text, names in texts.items()}
        taken = f"Taken by {_joined_words([spec.name for spec in by])}."
        yield KeyRow(f"model.{argument}", values, default,
                     f"{_grouped(texts, ' ')} {taken}".strip())


def _merged(rows: Iterable[KeyRow]) -> Iterator[KeyRow]:
    grouped: dict[str, list[KeyRow]] = {}
    for row in rows:
        grouped.setdefault(row.key, []).append(row)
    for key, group in grouped.items():
        yield KeyRow(key, _joined([r.values for r in group], " | "),
                     _joined([r.default for r in group], _DEFAULTS_SEPARATOR),
                     _joined([r.description for r in group], " "))


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (`EarlyStopping | None` holds `EarlyStopping`)."""
    candidates = [annotation, *get_args(annotation)] if _is_union(annotation) else [annotation]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                None)


def _mapping_value_models(annotation: Any) -> list[list[type[BaseModel]]]:
    """For `dict[str, A | B]` fields, `[[A, B]]`: the models a mapping's values may be."""
    if get_origin(annotation) is not dict:
        return []
    models = [m for m in _union_members(get_args(annotation)[1])
              if isinstance(m, type) and issubclass(m, BaseModel)]
    return [models] if models else []


# --------------------------------------------------------------------------------------------
# Types, values and docstrings as text


def _values_text(annotation: Any, metadata: Iterable[Any] = ()) -> str:
    """`float in [0, 1)`, `adam | sgd`, `list of int > 0`, `float > 0 | null`, ..."""
    constraints = list(metadata)
    while get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        constraints += more
    constraints = [c for item in constraints
                   for c in (item.metadata if isinstance(item, FieldInfo) else [item])]
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(_default_text(value) for value in get_args(annotation))
    if _is_union(annotation):
        members = _union_members(annotation)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1 and len(models) == len(members):
            return _tagged_union_text(models)
        text = _joined([_values_text(m) for m in members if m is not type(None)], " | ")
        return f"{text} | null" if type(None) in members else text
    if origin in (list, tuple):
        item = _values_text(get_args(annotation)[0])
        least = next((c.min_length for c in constraints
                      if isinstance(c, annotated_types.MinLen)), 0)
        grouped = " | " in item and not item.startswith("{")
        text = f"list of ({item})" if grouped else f"list of {item}"
        return f"{text}, at least {least}" if least else text
    if origin is dict:
        key, value = (_values_text(a) for a in get_args(annotation))
        return f"mapping of {key} to {value}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return _number_text(getattr(annotation, "__name__", str(annotation)), constraints)


def _tagged_union_text(models: list[type[BaseModel]]) -> str:
    """`{op: flip | rotation | ...}`: mappings told apart by a key every one of them fixes."""
    for tag in models[0].model_fields:
        fixed = [m.model_fields.get(tag) for m in models]
        if all(f is not None and get_origin(f.annotation) is Literal for f in fixed):
            return f"{{{tag}: {' | '.join(_values_text(f.annotation) for f in fixed)}}}"
    return "mapping"


def _number_text(name: str, constraints: list[Any]) -> str:
    """`float in [0, 1)`, `int > 0`: a type with its bounds, if any."""
    low = high = None  # (bracket, sign, bound)
    for c in constraints:
        if isinstance(c, annotated_types.Gt):
            low = ("(", ">", c.gt)
        elif isinstance(c, annotated_types.Ge):
            low = ("[", ">=", c.ge)
        elif isinstance(c, annotated_types.Lt):
            high = (")", "<", c.lt)
        elif isinstance(c, annotated_types.Le):
            high = ("]", "<=", c.le)
    if low and high:
        return f"{name} in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
    if low or high:
        _, sign, bound = low or high
        return f"{name} {sign} {bound:g}"
    return name


def _default_text(value: Any) -> str:
    """A value as a recipe would write it in YAML flow style."""
    if value is PydanticUndefined:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_default_text(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_default_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value) if value != "" else '""'


def _without_repeated_default(description: str, default: str) -> str:
    repeated = f"Default: {default}."
    if description.endswith(repeated):
        return description[: -len(repeated)].rstrip()
    return description


def _by_value(per_builder: dict[str, str]) -> dict[str, list[str]]:
    """Builders grouped by what they say: `{text: [builder, ...]}`."""
    groups: dict[str, list[str]] = {}
    for builder, text in per_builder.items():
        groups.setdefault(text, []).append(builder)
    return groups


def _grouped(groups: dict[str, list[str]], separator: str) -> str:
    """The one text every builder shares, or `cnn: ...` for each group of builders."""
    if len(groups) <= 1:
        return next(iter(groups), "")
    return separator.join(f"{', '.join(names)}: {text}" for text, names in groups.items())


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else f"{text}."


def _joined(parts: Iterable[str], separator: str) -> str:
    """The distinct parts, in their first order."""
    return separator.join(dict.fromkeys(parts))


def _joined_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _union_members(annotation: Any) -> list[Any]:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return list(get_args(annotation)) if _is_union(annotation) else [annotation]


def _pieces(default: str) -> list[str]:
    return default.split(_DEFAULTS_SEPARATOR)


# --------------------------------------------------------------------------------------------
# Markdown


def _markdown_code(text: str) -> str:
    # A pipe ends a table cell even inside a code span, unless escaped.
    return text.replace("|", "\\|")


def _markdown_default(default: str) -> str:
    return "<br>".join(f"`{_markdown_code(piece)}`" for piece in _pieces(default))


def _markdown_text(text: str) -> str:
    """Plain text for a Markdown cell: `<name>` is not an HTML tag and `*` no emphasis, while
    `code spans` stay as they are."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;")
                    .replace("|", "\\|"))
    for i in range(1, len(parts), 2):
        parts[i] = _markdown_code(parts[i])
    return "`".join(parts)


if __name__ == "__main__":
    sys.stdout.write(markdown())
