"""Training: a recipe to a trained, saved and tracked model.

    from zoo.recipe import load_recipe
    from zoo.training import train
    result = train(load_recipe("digits/cnn", ["training.epochs=5"]))

The modules, each with one job: `trainer` (prepare and train a recipe, its callbacks),
`optim` (optimizers), `schedules` (learning-rate schedules in the graph), `execution` (seeding,
threads, XLA and the determinism policy), `model_files` (atomic saves and weight hashes) and
`monitor` (per-layer training health). They import the recipe schema, data, models and the
MLflow store below them, never the workflows above.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Prepared", "Result", "prepare", "train"]


def __getattr__(name: str) -> Any:
    # The trainer imports Keras; `zoo.training.monitor.policy` must stay importable without it.
    if name in __all__:
        from zoo.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'zoo.training' has no attribute {name!r}")
