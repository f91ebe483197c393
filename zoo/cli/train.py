"""`zoo train`: train a recipe and record an MLflow run."""

from __future__ import annotations

import json
import sys

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    train = arguments.command(
        commands, "train", summary="train a recipe and record an MLflow run",
        description="Train a recipe and record an MLflow run: evaluate the model once on the "
        "test split, save it under models/ and print its test accuracy, run id and path. Any "
        "recipe key can be overridden on the command line as dotted.key=value.",
        examples=["zoo train mnist1d/cnn_paper",
                  "zoo train mnist1d/cnn_paper training.epochs=5",
                  "zoo train digits/cnn model.dropout=0.3 seed=1 --json --system-metrics",
                  "zoo train recipes/mnist1d/mlp.yaml optimizer.name=sgd --no-track"])
    arguments.recipe_arguments(train)
    train.add_argument("--json", action="store_true",
                       help="print a JSON object with run id, metrics and model path last")
    arguments.no_track_argument(train)
    train.add_argument("--system-metrics", action="store_true", default=None,
                       help="log CPU, memory, disk, network (and GPU) use as system/* metrics "
                       "every 2 s (also on with MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true)")
    train.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import mlflow_layout as layout
    from zoo.recipe import load_recipe
    from zoo.training.trainer import train

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"zoo: training {recipe.name} on {recipe.data.dataset} "
          f"(model {recipe.model.name}, seed {recipe.seed}, "
          f"fingerprint {recipe.fingerprint[:12]})", flush=True)
    result = train(recipe, track=not args.no_track, verbose=1 if sys.stdout.isatty() else 2,
                   system_metrics=args.system_metrics)
    print(f"\ntest_accuracy  {result.test_accuracy:.4f}")
    print(f"test_loss      {result.test_loss:.4f}")
    print(f"epochs         {result.epochs} in {result.seconds:.1f} s")
    if result.run_id:
        experiment = layout.experiment_for(recipe.data.dataset)
        print(f"mlflow run     {result.run_id} (experiment {experiment}; browse with `make ui`)")
    print(f"model          {result.model_path}")
    if args.json:
        print(json.dumps(result.summary()))
    return 0
