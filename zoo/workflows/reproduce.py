"""`make reproduce MODEL=name`: retrain a shipped model from its manifest recipe and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo import mlflow_layout as layout
from zoo.pretrained.loader import manifest, manifest_entry

# A retrained model whose weights differ still reproduces the entry if its test accuracy is
# within half a percentage point (another machine or TensorFlow build changes float round-off).
TOLERANCE = 0.005


@dataclass
class Reproduction:
    """What `reproduce` found: the shipped and the retrained model's weights sha256 and test
    accuracy."""

    name: str
    seed: int
    shipped_weights: str
    new_weights: str
    shipped_accuracy: float
    new_accuracy: float
    run_id: str | None
    # The CPU models the entry was built and retrained on, and the lowest and highest test
    # accuracy of the seeds it was built from: on another CPU model the float round-off differs
    # from the first step, and the retrained run is one more draw from that spread.
    built_on: str = ""
    retrained_on: str = ""
    seed_range: tuple[float, float] | None = None

    @property
    def other_cpu(self) -> bool:
        """Whether the entry was built on another CPU model than this retraining ran on."""
        return bool(self.built_on) and bool(self.retrained_on) and (
            self.built_on != self.retrained_on)

    @property
    def identical(self) -> bool:
        """Whether the retrained weights are the shipped ones, bit for bit."""
        return self.new_weights == self.shipped_weights

    @property
    def verdict(self) -> str:
        """`reproduced` (identical weights, or test accuracy within `TOLERANCE`) or
        `NOT reproduced`, with the difference."""
        if self.identical:
            return "reproduced: identical weights"
        difference = self.new_accuracy - self.shipped_accuracy
        if abs(difference) <= TOLERANCE:
            return (f"reproduced: weights differ, test accuracy within {TOLERANCE * 100:.1f} "
                    f"points ({difference * 100:+.2f})")
        machines = (f"built on {self.built_on}, retrained on {self.retrained_on}"
                    if self.other_cpu else "")
        if self.other_cpu and self.seed_range is not None:
            low, high = self.seed_range
            if low - TOLERANCE <= self.new_accuracy <= high + TOLERANCE:
                return (f"reproduced: weights differ ({machines}: another CPU model rounds "
                        "differently, which changes the weights as another seed does); test "
                        f"accuracy within the entry's seeds' {low:.4f} to {high:.4f}")
        return (f"NOT reproduced: weights differ and test accuracy is {difference * 100:+.2f} "
                f"points off (tolerance {TOLERANCE * 100:.1f})"
                + (f"; {machines}" if machines else ""))

    def report(self) -> str:
        """The comparison for the terminal: both weights' sha256, both test accuracies and the
        verdict."""
        return "\n".join([
            f"{self.name} seed {self.seed}",
            f"  weights sha256  shipped {self.shipped_weights}",
            f"                  new     {self.new_weights}",
            f"  test accuracy   shipped {self.shipped_accuracy:.4f}   new {self.new_accuracy:.4f}",
            f"  {self.verdict}",
        ])


def reproduce(name: str, directory: Path | None = None, track: bool = True,
              model_dir: Path | None = None, verbose: int | str = 0) -> Reproduction:
    """Retrain entry `name` from the manifest's resolved recipe and seed; `verbose` as Keras'
    `fit` takes it (the CLI shows a line an epoch: a retrain can take minutes)."""
    from zoo.errors import ModelFileError
    from zoo.recipe import validate
    from zoo.tracking import cpu_model
    from zoo.training.trainer import train

    entry = manifest_entry(name, directory)
    recipe = validate(entry["recipe"])
    if recipe.fingerprint != entry["fingerprint"]:
        # The schema's defaults changed since the model was built: the same YAML now means
        # another configuration, so a retrain would not be a reproduction.
        raise ModelFileError(
            f"{name}: the manifest's recipe resolves to fingerprint {recipe.fingerprint[:12]}, "
            f"not the shipped {entry['fingerprint'][:12]}; the recipe schema changed since "
            "`make zoo` built it; rebuild the entry with `make zoo`")
    result = train(recipe, track=track, verbose=verbose, model_dir=model_dir,
                   tags={layout.REPRODUCE: name})
    return Reproduction(
        name=name,
        seed=recipe.seed,
        shipped_weights=entry["weights_sha256"],
        new_weights=result.weights_sha256,
        shipped_accuracy=entry["metrics"]["shipped"]["test_accuracy"],
        new_accuracy=result.test_accuracy,
        run_id=result.run_id,
        built_on=(entry.get("hardware") or manifest(directory).get("hardware", {})).get("cpu", ""),
        retrained_on=cpu_model(),
        seed_range=_seed_range(entry),
    )


def _seed_range(entry: dict) -> tuple[float, float] | None:
    """The lowest and highest test accuracy of the seeds the entry was built from."""
    per_seed = entry.get("metrics", {}).get("test_accuracy", {}).get("per_seed", {})
    values = [float(v) for v in per_seed.values()]
    return (min(values), max(values)) if values else None
