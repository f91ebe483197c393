"""The model registry: builders registered by name, their arguments validated from signatures.

The zoo's builders (`zoo.models`) register themselves when their package is imported; the
lookups here import it by name on first use, as plugins are loaded, so that this module, and the
recipe schema that asks it, import no Keras code of their own.

A builder is a function `builder(x, num_classes, regularizer, /, *, arg=default, ...)` that takes
the (standardized) input tensor and returns class probabilities. Its keyword-only arguments are
the recipe's `model.*` keys: their annotations and defaults are the schema, so a builder states
its options once and the recipe validation, defaults and MLflow params all follow from it.

Constraints between arguments, or between an argument and the kind of data (images or
sequences), live in an optional `check(kind, **args)` registered with the builder. It raises
`ArgumentError` naming the builder's own argument; the recipe loader adds the `model.` prefix.
So a recipe, every ablation cell and every corner of a tuning space is checked when it loads,
before anything trains, and the builder runs the same check when it builds.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from zoo.errors import UnknownNameError

Builder = Callable[..., Any]
ArgumentCheck = Callable[..., None]
DATA_KINDS = ("image", "sequence")


class ArgumentError(ValueError):
    """A builder argument that does not fit the other arguments or the data.

    Args:
        argument: the builder's argument (`dilation`), or `name` when the model as a whole
            does not fit the data.
        message: what is wrong and how to fix it, naming arguments without the `model.` prefix.
    """

    def __init__(self, argument: str, message: str):
        self.argument, self.message = argument, message
        super().__init__(f"{argument}: {message}")


@dataclass(frozen=True)
class ModelSpec:
    """A registered builder: its name, its function, the pydantic model of its keyword arguments
    (the recipe's `model.*` keys), the first line of its docstring, the docstring's text of
    each argument (its `Args:` section) and its optional `check`."""

    name: str
    builder: Builder
    args_model: type[BaseModel]
    summary: str
    arg_docs: dict[str, str]
    check: ArgumentCheck | None = None

    @property
    def arg_names(self) -> list[str]:
        """The builder's keyword-only arguments, in the order of its signature."""
        return list(self.args_model.model_fields)

    def defaults(self) -> dict[str, Any]:
        """Every argument's default, as plain (JSON) data."""
        return self.args_model().model_dump(mode="json")

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments with defaults filled in, as plain data; raises pydantic's ValidationError."""
        return self.args_model.model_validate(args).model_dump(mode="json")

    def typed_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments validated, defaults filled in, as the values the builder takes (not
        plain data, as `validate_args` returns); raises pydantic's ValidationError."""
        validated = self.args_model.model_validate(args)
        return {name: getattr(validated, name) for name in self.arg_names}

    def check_args(self, args: dict[str, Any], kind: str) -> None:
        """Raise `ArgumentError` when the arguments do not fit each other or the data kind.

        Args:
            args: the builder's arguments (validated, defaults filled in or not).
            kind: `image` or `sequence`.
        """
        if self.check is not None:
            self.check(kind, **self.typed_args(args))


_REGISTRY: dict[str, ModelSpec] = {}
BUILDER_PACKAGES = ("zoo.models",)  # importing each registers its builders


def _registered() -> dict[str, ModelSpec]:
    for package in BUILDER_PACKAGES:
        importlib.import_module(package)
    return _REGISTRY


def register_model(builder: Builder | None = None, *, name: str | None = None,
                   check: ArgumentCheck | None = None):
    """Register a builder under its function name (or `name`); duplicates are refused.

    Args:
        builder: the builder function (when used as `@register_model` without arguments).
        name: the registered name; default the function's name.
        check: `check(kind, **args)`, raising `ArgumentError` for arguments that do not fit
            each other or the data kind (`image` or `sequence`).
    """

    def decorate(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered already (by {_REGISTRY[key].builder})")
        _REGISTRY[key] = ModelSpec(key, fn, _args_model(key, fn), _summary(fn),
                                   _argument_docs(fn), check)
        return fn

    return decorate(builder) if builder is not None else decorate


def get_model_spec(name: str) -> ModelSpec:
    """The builder registered as `name`.

    Raises:
        UnknownNameError: no builder is registered as `name`; the message lists those that are.
    """
    registered = _registered()
    try:
        return registered[name]
    except KeyError:
        raise UnknownNameError("model", name, list(registered)) from None


def model_names() -> list[str]:
    """The registered builders' names, sorted."""
    return sorted(_registered())


def _args_model(key: str, fn: Builder) -> type[BaseModel]:
    signature = inspect.signature(fn, eval_str=True)
    fields = {}
    for param in signature.parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"builder {key}: argument {param.name} needs a default")
        fields[param.name] = (param.annotation, param.default)
    return create_model(
        f"{key}_arguments", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


def _summary(fn: Builder) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0] if doc else ""


def _argument_docs(function: Builder) -> dict[str, str]:
    """A Google-style docstring's `Args:` entries, each joined onto one line."""
    lines = (inspect.getdoc(function) or "").splitlines()
    if "Args:" not in lines:
        return {}
    entries: dict[str, str] = {}
    indent, current = None, None
    for line in lines[lines.index("Args:") + 1:]:
        if not line.strip() or not line.startswith(" "):
            break  # a blank line or the next section (Returns:) ends the arguments
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        entry = re.match(r"(\w+)(?: \([^)]*\))?: ?(.*)", line.strip())
        if depth == indent and entry:
            current = entry[1]
            entries[current] = entry[2]
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries
