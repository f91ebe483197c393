"""Imports point down the layers: a module may import its own layer and the ones below, never a
layer above. Read from the source (`ast`), function-level imports included, so a lazy import
cannot hide an upward dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"

# Bottom to top, a folder per layer above the foundation. A module belongs to the layer of its
# longest listed prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("zoo.errors", "zoo.paths", "zoo.files", "zoo.interrupt",
                    "zoo.mlflow_layout", "zoo.plots", "zoo.augment_ops")),
    ("recipe schema and registries", ("zoo.recipe", "zoo.recipe_keys", "zoo.registry")),
    ("data, models, pretrained models and the MLflow store", (
        "zoo.data", "zoo.models", "zoo.pretrained", "zoo.tracking", "zoo.logged_models",
        "zoo.server")),
    ("training", ("zoo.training",)),
    ("workflows", ("zoo.workflows",)),
    ("command line and package", ("zoo.cli", "zoo")),
]

# Upward edges that stay for now, each with its reason: none.
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names `module` or a package above it."""
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    if index is None:
        raise LookupError(module)
    return index


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The zoo modules `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "zoo":  # `from zoo import paths`: the submodules
                found.update(f"zoo.{alias.name}" for alias in node.names)
            elif node.module.startswith("zoo."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("zoo."))
    return found


def upward_imports(modules: dict[str, set[str]]) -> list[str]:
    """`importer -> imported (layer -> layer)` for every import of a higher layer."""
    found = []
    for importer, imported in sorted(modules.items()):
        for target in sorted(imported):
            if target == "zoo.__version__":
                continue
            low, high = layer_of(importer), layer_of(target)
            allowed = any((importer == a or importer.startswith(a + ".")) and
                          (target == b or target.startswith(b + ".")) for a, b in ALLOWED_UPWARD)
            if high > low and not allowed:
                found.append(f"{importer} -> {target} ({LAYERS[low][0]} -> {LAYERS[high][0]})")
    return found


def _package() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = []
    for module in _package():
        try:
            layer_of(module)
        except LookupError:
            unplaced.append(module)
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: {unplaced}"


def test_imports_point_down_the_layers():
    upward = upward_imports(_package())
    assert not upward, ("imports of a higher layer (move the shared code down, or pass it in):"
                        "\n  " + "\n  ".join(upward))


def test_the_recipe_schema_imports_no_training_or_workflow():
    package = _package()
    training = next(i for i, (name, _) in enumerate(LAYERS) if name == "training")
    schema = [m for m in package if layer_of(m) <= 1]
    assert {"zoo.recipe", "zoo.recipe_keys", "zoo.errors"} <= set(schema)
    reached = {t for m in schema for t in package[m] if t != "zoo.__version__"}
    assert not {t for t in reached if layer_of(t) >= training}


@pytest.mark.parametrize("importer,target", [("zoo.recipe", "zoo.training.trainer"),
                                             ("zoo.data.splits", "zoo.workflows.tune"),
                                             ("zoo.registry.models", "zoo.models"),
                                             ("zoo.plots", "zoo.recipe")])
def test_an_upward_import_is_caught(importer, target):
    assert upward_imports({importer: {target}}) != []


@pytest.mark.processes
def test_the_old_home_of_train_still_works_with_a_warning():
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error'); from zoo.train import train")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "zoo.train is now zoo.training" in done.stderr
    code = ("import warnings; warnings.simplefilter('ignore'); import zoo.training; "
            "from zoo.train import train; assert train is zoo.training.train")
    subprocess.run([sys.executable, "-c", code], timeout=120, check=True)


def test_the_data_set_registry_names_what_zoo_data_loads():
    from zoo.data.embedded import EMBEDDED
    from zoo.registry.datasets import EMBEDDED_KINDS

    assert set(EMBEDDED) == set(EMBEDDED_KINDS)
