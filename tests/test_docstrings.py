"""Every public function, class and method of the package has a docstring.

Public means a module-level function or class whose name does not start with `_`, or a method
of such a class whose name does not start with `_` (which leaves out dunder methods). Modules
are read with `ast`, not imported, so the check costs no Keras import.

A method that overrides a hook of a third-party base class (a Keras callback's `on_epoch_end`,
a Keras Tuner `run_trial`) is exempt: the base class documents what the hook is called for and
what it returns. The exemption is by hook name and by where the class's base comes from, so a
zoo class that merely has a method of that name (`JobResult.load_model`) still needs one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"

# Hooks of third-party base classes, by the top-level package the base class is imported from.
HOOKS = {
    "keras": {
        # keras.callbacks.Callback
        "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
        "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
        "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
        "on_predict_batch_begin", "on_predict_batch_end", "set_model", "set_params",
        # keras.layers.Layer and keras.Model
        "build", "call", "compute_output_shape",
        # Keras serialization (layers, models, learning-rate schedules)
        "get_config", "from_config",
    },
    "keras_tuner": {
        # kt.HyperModel
        "build", "fit",
        # kt.Tuner and kt.engine.base_tuner.BaseTuner
        "run_trial", "save_model", "load_model", "on_trial_begin", "on_trial_end",
        "on_search_begin", "on_search_end",
        # kt.Oracle
        "populate_space",
    },
}


def _import_roots(tree: ast.Module) -> dict[str, str]:
    """Each name the module binds by importing, mapped to its top-level package
    (`kt` -> `keras_tuner`, `layers` from `from keras import layers` -> `keras`)."""
    roots = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                roots[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                roots[alias.asname or alias.name] = node.module.split(".")[0]
    return roots


def _base_packages(cls: ast.ClassDef, roots: dict[str, str], classes: dict[str, ast.ClassDef],
                   seen: frozenset[str] = frozenset()) -> set[str]:
    """The top-level packages `cls` inherits from: of its bases' imports, or, for a base
    defined in the same module, that class's own."""
    packages = set()
    for base in cls.bases:
        while isinstance(base, ast.Attribute):
            base = base.value
        if not isinstance(base, ast.Name):
            continue
        if base.id in roots:
            packages.add(roots[base.id])
        elif base.id in classes and base.id not in seen:
            packages |= _base_packages(classes[base.id], roots, classes, seen | {cls.name})
    return packages


def undocumented(source: str, path: str) -> Iterator[str]:
    """`path:line name` of each public definition in `source` without a docstring."""
    tree = ast.parse(source)
    roots = _import_roots(tree)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, definitions) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            yield f"{path}:{node.lineno} {node.name}"
        if not isinstance(node, ast.ClassDef):
            continue
        hooks = set().union(*(HOOKS.get(package, set())
                              for package in _base_packages(node, roots, classes)))
        for method in node.body:
            if (isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not method.name.startswith("_") and method.name not in hooks
                    and ast.get_docstring(method) is None):
                yield f"{path}:{method.lineno} {node.name}.{method.name}"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_public_definitions_have_docstrings():
    modules = list(_modules())
    assert len(modules) > 20, f"found only {len(modules)} modules under {PACKAGE}"
    missing = [gap for m in modules for gap in undocumented(m.read_text(), _relative(m))]
    assert not missing, (
        f"public definitions without a docstring ({len(missing)}):\n  " + "\n  ".join(missing)
        + "\nGive each a docstring (Google style, as in the rest of the package). A method that "
        "overrides a hook of a third-party base class may instead have its name added to HOOKS "
        "in tests/test_docstrings.py.")


def test_hooks_are_exempt_only_under_a_third_party_base():
    source = '''
import keras
import keras_tuner as kt
from keras.callbacks import Callback


class Monitor(keras.callbacks.Callback):
    """Documented."""

    def on_epoch_end(self, epoch, logs=None):
        pass

    def report(self):
        pass


class Tuner(kt.Tuner):
    """Documented."""

    def run_trial(self, trial):
        pass


class Subclass(Monitor):
    """Documented."""

    def on_train_end(self, logs=None):
        pass


class Plain(Callback):
    def __init__(self):
        pass


class Result:
    """Documented."""

    def load_model(self):
        pass

    def _private(self):
        pass


def helper():
    pass


def _private():
    pass
'''
    assert list(undocumented(source, "m.py")) == [
        "m.py:13 Monitor.report", "m.py:31 Plain", "m.py:39 Result.load_model",
        "m.py:46 helper"]
