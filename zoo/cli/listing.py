"""`zoo list`: models, data sets, recipes, pretrained models or recipe keys."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    listing = arguments.command(
        commands, "list", summary="list models, datasets, recipes, pretrained or keys",
        description="Print the registered model builders, the datasets, the recipes under "
        "recipes/, the pretrained models with their test accuracy, or every recipe key with "
        "its default and meaning.",
        examples=["zoo list recipes", "zoo list pretrained", "zoo list keys", "zoo list all"])
    listing.add_argument("what", choices=["models", "datasets", "recipes", "pretrained", "keys",
                                          "all"],
                         help="what to list; all: everything but the recipe keys, which have a "
                         "table of their own")
    listing.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    sections = (["models", "datasets", "recipes", "pretrained"] if args.what == "all"
                else [args.what])
    for section in sections:
        if len(sections) > 1:
            print(f"{section}:")
        for line in _listing(section):
            print(("  " if len(sections) > 1 else "") + line)
    return 0


def _listing(section: str) -> list[str]:
    if section == "models":
        from zoo.models import get_model_spec, model_names

        return [f"{name:<10} {get_model_spec(name).summary}" for name in model_names()]
    if section == "datasets":
        from zoo.data import dataset_names

        return dataset_names()
    if section == "pretrained":
        return pretrained_listing()
    if section == "keys":
        from zoo.recipe_keys import text_table

        return text_table()
    from zoo.recipe import list_recipes

    return list_recipes()


def pretrained_listing() -> list[str]:
    """The shipped models as table lines: accuracy over seeds, target, shipped seed, size."""
    from zoo.pretrained import list_pretrained
    from zoo.pretrained.loader import target_text

    rows = list_pretrained()
    width = max([len("name"), *(len(row["name"]) for row in rows)])
    lines = [f"{'name':<{width}} {'test accuracy (3 seeds)':<24} {'target':<14} "
             f"{'shipped':<16} {'params':>9}"]
    for row in rows:
        target = row["target"]
        met = "" if target is None else (
            f">={target_text(target)} "
            f"{'ok' if row['test_accuracy_mean'] >= target else 'MISSED'}")
        lines.append(
            f"{row['name']:<{width}} {row['test_accuracy_mean']:.4f} ± "
            f"{row['test_accuracy_std']:.4f}{'':<8} {met:<14} seed {row['shipped_seed']} "
            f"{row['shipped_test_accuracy']:.4f} {row['params']:>9,}")
    return lines
