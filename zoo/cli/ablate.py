"""`zoo ablate`: a grid of switches over seeds, one MLflow child run per cell and seed."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    ablate = arguments.command(
        commands, "ablate", summary="train a grid of switches over seeds",
        description="Every combination of the axes, each over --seeds seeds, as child runs of "
        "one MLflow parent; resumable: the same command again skips the finished cells. "
        "Overrides apply to every cell. Compare the cells with zoo compare --parent.",
        examples=["zoo ablate mnist1d/cnn --axis model.dropout=0,0.3 --seeds 2",
                  "zoo ablate mnist1d/cnn_plain --axis model.normalization=batch,layer,none",
                  "zoo ablate mnist1d/cnn --axis model.residual=false,true training.epochs=10",
                  "zoo ablate mnist1d/mlp_plain --axis overlay=aug_shift_noise,none --workers 2"])
    arguments.recipe_arguments(ablate)
    ablate.add_argument("--axis", action="append", required=True, metavar="key=v1,v2",
                        help="a recipe key and its values, once per axis (at least one); "
                        "overlay=NAME,none for recipes/overlays/<kind>/NAME.yaml")
    ablate.add_argument("--seeds", type=int, default=3,
                        help="seeds per cell: seed, seed+1, ... (default: 3)")
    arguments.workers_argument(ablate, "run left")
    ablate.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.workflows.workers import WorkerPool, check_workers, cores, shared_address

    check_workers(args.workers, "ablate")
    address = shared_address("ablate")  # KERASTUNER_ORACLE_IP/PORT: workers elsewhere join
    # The other workers start first: they import TensorFlow while this process loads and checks
    # the grid and opens its MLflow run, and are ready when the first job is.
    with WorkerPool.started((args.workers or cores()) - 1, address=address) as pool:
        from zoo.recipe import load_recipe
        from zoo.workflows.ablate import ablate, parse_axis

        recipe = load_recipe(args.recipe, args.overrides)
        parent = ablate(recipe, [parse_axis(a) for a in args.axis], seeds=args.seeds,
                        workers=args.workers, pool=pool)
    print(f"\nmlflow run     {parent} (parent)\ncompare with   zoo compare --parent {parent}")
    return 0
