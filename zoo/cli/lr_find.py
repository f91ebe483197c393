"""`zoo lr-find`: the learning-rate range test."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    lr_find = arguments.command(
        commands, "lr-find", summary="learning-rate range test: loss against rate",
        description="Train a fresh model for --steps batches with the learning rate rising "
        "from --start to --end; plot the loss against the rate and suggest one. Exits 1 if the "
        "loss gives no rate to suggest.",
        examples=["zoo lr-find mnist1d/cnn_paper",
                  "zoo lr-find digits/mlp optimizer.name=sgd --steps 100 --end 1 --no-track"])
    arguments.recipe_arguments(lr_find)
    lr_find.add_argument("--steps", type=int, default=200,
                         help="optimizer steps (default: 200)")
    lr_find.add_argument("--start", type=float, default=1e-7,
                         help="first learning rate (default: 1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0,
                         help="last learning rate (default: 10)")
    lr_find.add_argument("--out", default=None,
                         help="PNG path (default: build/lr-find/<recipe>.png)")
    arguments.no_track_argument(lr_find)
    lr_find.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import mlflow_layout as layout
    from zoo.recipe import load_recipe
    from zoo.workflows.lr_find import lr_find

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"zoo: learning-rate range test of {recipe.name} ({recipe.optimizer.name}, "
          f"{args.steps} steps from {args.start:g} to {args.end:g})", flush=True)
    result = lr_find(recipe, steps=args.steps, start=args.start, end=args.end,
                     track=not args.no_track, out=args.out)
    stop = "stopped when the loss diverged" if result.stopped_early else "ran to the end"
    print(f"steps          {len(result.losses)} ({stop})")
    if result.min_loss_rate is not None:
        print(f"lowest loss at {result.min_loss_rate:.2g}")
    if result.suggested is not None:
        print(f"suggested      {result.suggested:.2g} (steepest descent of the smoothed loss)")
        print(f"use            zoo train {recipe.name} {result.override}")
    for note in result.notes:
        print(f"note           {note}")
    print(f"plot           {result.plot_path}")
    if result.run_id:
        experiment = layout.experiment_for(recipe.data.dataset)
        print(f"mlflow run     {result.run_id} (experiment {experiment})")
    return 0 if result.suggested is not None else 1
