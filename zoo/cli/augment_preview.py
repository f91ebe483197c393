"""`zoo augment-preview`: a PNG grid of original and augmented samples."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    preview = arguments.command(
        commands, "augment-preview",
        summary="write a PNG grid of original and augmented samples",
        description="Write a PNG grid of training examples, each followed by augmented "
        "versions of it, to see what the recipe's data.augmentation does before training "
        "with it.",
        examples=["zoo augment-preview mnist1d/cnn_paper",
                  "zoo augment-preview digits/cnn_aug --samples 4 --out build/digits_aug.png"])
    arguments.recipe_arguments(preview)
    preview.add_argument("--out", default=None,
                         help="PNG path (default: build/augment-preview/<recipe>.png)")
    preview.add_argument("--samples", type=int, default=6,
                         help="training examples, one a row (default: 6)")
    preview.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import paths
    from zoo.data.augment import preview
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = args.out or paths.project_root() / "build" / "augment-preview" / (
        recipe.name.replace("/", "_") + ".png")
    print(f"zoo: wrote {preview(recipe, out, samples=args.samples)}")
    return 0
