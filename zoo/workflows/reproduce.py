"""`make reproduce MODEL=name`: retrain a shipped model from its manifest recipe and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo import mlflow_layout as layout
from zoo.pretrained.loader import manifest_entry

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
        return (f"NOT reproduced: weights differ and test accuracy is {difference * 100:+.2f} "
                f"points off (tolerance {TOLERANCE * 100:.1f})")

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
              model_dir: Path | None = None) -> Reproduction:
    """Retrain entry `name` from the manifest's resolved recipe and seed."""
    from zoo.errors import ModelFileError
    from zoo.recipe import validate
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
    result = train(recipe, track=track, verbose=0, model_dir=model_dir,
                   tags={layout.REPRODUCE: name})
    return Reproduction(
        name=name,
        seed=recipe.seed,
        shipped_weights=entry["weights_sha256"],
        new_weights=result.weights_sha256,
        shipped_accuracy=entry["metrics"]["shipped"]["test_accuracy"],
        new_accuracy=result.test_accuracy,
        run_id=result.run_id,
    )
