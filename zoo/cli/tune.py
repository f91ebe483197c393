"""`zoo tune`: search a recipe's tune.space with Keras Tuner."""

from __future__ import annotations

import json

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    tune = arguments.command(
        commands, "tune", summary="tune a recipe's tune.space with Keras Tuner",
        description="Search the recipe's tune.space; each trial is an MLflow child run. Running "
        "it again resumes the search. The best trial is written as a complete recipe beside "
        "the one tuned (<name>.tuned.yaml), ready for zoo train.",
        examples=["zoo tune mnist1d/mlp",
                  "zoo tune mnist1d/mlp tune.max_trials=4 training.epochs=20 --workers 2",
                  "zoo tune mnist1d/mlp --refine",
                  "zoo tune mnist1d/mlp --overwrite"])
    arguments.recipe_arguments(tune)
    tune.add_argument("--overwrite", action="store_true",
                      help="discard a saved search of this recipe instead of resuming it")
    tune.add_argument("--refine", action="store_true",
                      help="second pass over a narrower space around the best trials")
    tune.add_argument("--workers", type=int, default=None,
                      help="N > 1 runs Keras Tuner's chief and N worker processes on this "
                      "machine, 1 searches in this process (default: one per core, at most "
                      "one per trial; 1 for a bayesian search)")
    tune.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.errors import ArgumentError
    from zoo.recipe import load_recipe
    from zoo.workflows.tune import is_chief, join, refine, shared_role, tune

    role = shared_role()
    if role is not None and (args.workers is not None or args.refine):
        raise ArgumentError("tune: KERASTUNER_ORACLE_IP is set, so this process is "
                            f"{role} of a search across machines, which starts no workers "
                            "and refines nothing; drop --workers/--refine, or unset "
                            "KERASTUNER_ORACLE_IP to search here")
    recipe = load_recipe(args.recipe, args.overrides)
    if role is not None and not is_chief(role):
        trained = join(recipe, role)
        print(f"zoo: {role}: no trial left after {trained} trained here; the chief writes "
              "the tuned recipe")
        return 0
    if args.refine:
        result = refine(recipe, workers=args.workers)
    else:
        result = tune(recipe, overwrite=args.overwrite, workers=args.workers, role=role)
    print(f"\nbest           {json.dumps(result.best_values)}")
    print(f"{recipe.tune.objective.name:<14} {result.best_score:.4f}")
    print(f"mlflow run     {result.parent_run_id} (parent; one child run per trial)")
    print(f"tuned recipe   {result.tuned_recipe_path} (train it with `zoo train "
          f"{result.tuned_recipe_path}`)")
    return 0
