"""`zoo register` (`make register`): the shipped pretrained models in the MLflow Model Registry.

One registered model per manifest entry (`zoo-<data set>-<name>`, e.g. `zoo-mnist1d-cnn_paper`:
the registry's names take no `/`), with the model card as its description. Each shipped file
becomes one version, after its sha256 is checked against the manifest and it is loaded the way
`zoo.load` loads it (safe mode); the version carries the manifest's figures as tags and the
alias `shipped` points at it. Registering the same file again reuses its version, so the
command can be run after every `make zoo` against any store: the local SQLite one or a team's
tracking server. The manifest stays the verified, offline source of truth: `zoo.load` never
asks the registry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zoo import mlflow_layout as layout

ALIAS = "shipped"


@dataclass(frozen=True)
class Registered:
    """One entry as the registry now holds it."""

    entry: str
    model_name: str
    version: str
    created: bool  # False when the shipped file already had its version

    def line(self) -> str:
        """The line `zoo register` prints."""
        state = "registered" if self.created else "already registered"
        return (f"{self.entry:<20} {state} as models:/{self.model_name}@{ALIAS} "
                f"(version {self.version})")


def registered_name(entry: str) -> str:
    """The registry's name of a manifest entry: `mnist1d/cnn_paper` -> `zoo-mnist1d-cnn_paper`."""
    return "zoo-" + entry.replace("/", "-").replace(":", "-")


def register_pretrained(names: Sequence[str] = (), directory: Path | None = None,
                        alias: str = ALIAS) -> list[Registered]:
    """Register the shipped models `names` (default: every manifest entry) in the current
    MLflow store and point `alias` at each.

    Raises:
        UnknownNameError: a name is not in the manifest.
        ModelFileError: a shipped file is missing or fails its sha256.
    """
    from zoo import tracking
    from zoo.pretrained.loader import PRETRAINED_DIR, manifest, manifest_entry

    directory = directory or PRETRAINED_DIR
    entries = list(names) or sorted(manifest(directory)["entries"])
    for name in entries:
        manifest_entry(name, directory)  # an unknown name fails before anything is written
    client = tracking.client()
    return [_register(client, name, directory, alias) for name in entries]


def _register(client, name: str, directory: Path, alias: str) -> Registered:
    from mlflow.exceptions import MlflowException

    from zoo import tracking
    from zoo.data import load_dataset
    from zoo.logged_models import save_logged_model
    from zoo.pretrained.loader import load_verified, manifest_entry, read_verified

    entry = manifest_entry(name, directory)
    path = directory / entry["file"]
    read_verified(path, entry["sha256"])  # a damaged file is refused before the store is touched
    model_name = registered_name(name)
    card = directory / f"{name}.md"
    description = card.read_text() if card.exists() else f"zoo pretrained model {name}"
    try:
        client.create_registered_model(model_name, description=description,
                                       tags={layout.PRETRAINED: name})
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_registered_model(model_name, description=description)
    existing = client.search_model_versions(
        f"name = '{model_name}' and tag.`{layout.SHIPPED_SHA256}` = '{entry['sha256']}'")
    if existing:
        version, created = str(existing[0].version), False
    else:
        model = load_verified(path, entry["sha256"])  # checked again, then parsed (safe mode)
        example = load_dataset(entry["dataset"], 0.1).x_test
        experiment = tracking.ensure_experiment(client, layout.experiment_for(entry["dataset"]))
        logged = save_logged_model(client, experiment, model, example,
                                   params={k: str(v) for k, v in _recipe_params(entry).items()},
                                   tags={layout.PRETRAINED: name}, name=model_name)
        version = client.create_model_version(
            model_name, source=logged.artifact_location, model_id=logged.model_id,
            tags=_version_tags(entry), description=f"shipped file {entry['file']}, "
            f"sha256 {entry['sha256']}").version
        version, created = str(version), True
    client.set_registered_model_alias(model_name, alias, version)
    return Registered(name, model_name, version, created)


def _recipe_params(entry: dict) -> dict:
    from zoo.recipe import validate

    return validate(entry["recipe"]).flat()


def _version_tags(entry: dict) -> dict[str, str]:
    """The manifest's figures on the version: what it scores, what it is, where it came from."""
    metrics = entry["metrics"]
    return {
        layout.SHIPPED_SHA256: entry["sha256"],
        "zoo.weights_sha256": entry["weights_sha256"],
        "zoo.seed": str(entry["seed"]),
        "zoo.fingerprint": entry["fingerprint"],
        "zoo.test_accuracy": f"{metrics['shipped']['test_accuracy']:.4f}",
        "zoo.test_accuracy_mean": f"{metrics['test_accuracy']['mean']:.4f}",
        "zoo.test_accuracy_std": f"{metrics['test_accuracy']['std']:.4f}",
        "zoo.seeds": str(len(metrics["test_accuracy"]["per_seed"])),
        "zoo.target": str(entry.get("target")),
        "zoo.params": str(entry["params"]),
        "zoo.input_shape": json.dumps(entry["input_shape"]),
        "zoo.run_ids": json.dumps(entry.get("run_ids", {})),
    }
