"""Load the shipped models: manifest lookup, sha256 before parsing, built-in layers only.

A `.keras` file is a zip of a JSON config and the weights; Keras rebuilds the model from the
config. Verifying the file's sha256 against the manifest first means a tampered, truncated or
swapped file is refused before any of its contents is read, and `safe_mode=True` plus the layer
check below mean even a file with a matching hash can only name Keras' own classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from zoo.errors import ModelFileError, UnknownNameError, ZooDeprecation

PRETRAINED_DIR = Path(__file__).resolve().parent
MANIFEST_NAME = "manifest.json"

# Classes of the zoo's own that a shipped model may use. Empty: every shipped model is made of
# Keras built-ins, so it loads with plain `keras.saving.load_model` too.
ZOO_LAYERS: frozenset[str] = frozenset()
# Markers Keras writes for plain data (tensors and arrays inside a config), not classes.
_DATA_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__"})


def manifest(directory: Path | None = None) -> dict[str, Any]:
    """The manifest: `{"entries": {name: entry, ...}, ...}`."""
    path = (directory or PRETRAINED_DIR) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no pretrained manifest; build the zoo with `make zoo`") \
            from None
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: not valid JSON ({err}); restore it with "
                             f"`git checkout -- {path.name}` or rebuild with `make zoo`") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise ModelFileError(f"{path}: has no 'entries' mapping; rebuild it with `make zoo`")
    return data


def manifest_entry(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The manifest entry of one pretrained model: file, sha256, recipe, metrics, ... (its
    model card is the Markdown file beside the model, `zoo/pretrained/<name>.md`)."""
    entries = manifest(directory)["entries"]
    if name not in entries:
        raise UnknownNameError("pretrained model", name, list(entries))
    return entries[name]


def card(name: str, directory: Path | None = None) -> dict[str, Any]:
    """Deprecated name of `manifest_entry` (a card is the `.md` file); removed in zoo 0.3."""
    import warnings

    warnings.warn("zoo.card() is now zoo.manifest_entry() (a model card is the .md file beside "
                  "the model); zoo.card will be removed in zoo 0.3", ZooDeprecation, stacklevel=2)
    return manifest_entry(name, directory)


def list_pretrained(directory: Path | None = None) -> list[dict[str, Any]]:
    """One row per shipped model: name, test accuracy over seeds, the shipped seed's own."""
    rows = []
    for name, entry in sorted(manifest(directory)["entries"].items()):
        accuracy = entry["metrics"]["test_accuracy"]
        rows.append({
            "name": name,
            "test_accuracy_mean": accuracy["mean"],
            "test_accuracy_std": accuracy["std"],
            "seeds": len(accuracy["per_seed"]),
            "shipped_seed": entry["seed"],
            "shipped_test_accuracy": entry["metrics"]["shipped"]["test_accuracy"],
            "target": entry.get("target"),
            "params": entry["params"],
            "file": entry["file"],
        })
    return rows


def target_text(target: float) -> str:
    """A target as it was set: two decimals (0.90), three where it has them (0.935)."""
    return f"{target:.2f}" if round(target, 2) == target else f"{target:.3f}"


def load(name: str, directory: Path | None = None):
    """The pretrained Keras model `name`, after checking its file against the manifest.

    The model takes raw inputs (its standardization is a layer inside it) and outputs class
    probabilities. It is not compiled; compile it with e.g.
    `loss="sparse_categorical_crossentropy", metrics=["accuracy"]` to evaluate it.

    Raises:
        UnknownNameError: no such entry in the manifest.
        ModelFileError: the file is missing, not a `.keras` file, fails its sha256, or names a
            class that is not a Keras built-in.
    """
    entry = manifest_entry(name, directory)
    path = (directory or PRETRAINED_DIR) / entry["file"]
    return load_verified(path, entry["sha256"])


def load_verified(path: Path, expected_sha256: str):
    """Load a `.keras` file only if its bytes hash to `expected_sha256` (see module docstring)."""
    data = read_verified(path, expected_sha256)
    check_layer_classes(data, path)
    import keras

    # Keras reads from a path; hand it the bytes that were verified, not the file again, so a
    # file swapped after the check is never parsed.
    fd, tmp_name = tempfile.mkstemp(suffix=".keras")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        return keras.saving.load_model(tmp_name, compile=False, safe_mode=True)
    finally:
        os.unlink(tmp_name)


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """The file's bytes, if it is a `.keras` file whose sha256 is the expected one."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: only .keras model files are loaded")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file missing; restore it with "
                             f"`git checkout -- {path}` or rebuild with `make zoo`") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelFileError(
            f"{path}: sha256 {actual} does not match the manifest's {expected_sha256}; the "
            "file was changed, truncated or swapped and is not loaded. Restore it with "
            f"`git checkout -- {path}` or rebuild the zoo with `make zoo`")
    return data


def check_layer_classes(data: bytes, path: Path) -> None:
    """Refuse a model whose config names any class outside Keras and the zoo's own layers."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: not a readable .keras archive ({err})") from None
    for item in _serialized_objects(config):
        if item["class_name"] in _DATA_MARKERS:
            continue
        module, registered = item.get("module") or "", item.get("registered_name")
        is_builtin = (module == "keras" or module.startswith("keras.")) and (
            registered in (None, item["class_name"]) or str(registered).startswith("keras"))
        if not (is_builtin or registered in ZOO_LAYERS):
            raise ModelFileError(
                f"{path}: uses class {item['class_name']!r} from {module or '?'!r} "
                f"(registered as {registered!r}); only Keras built-ins and the zoo's layers "
                f"({', '.join(sorted(ZOO_LAYERS)) or 'none'}) are loaded")


def _serialized_objects(node: Any):
    """Every serialized Keras object (a dict with `class_name`) in a config tree."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _serialized_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _serialized_objects(value)
