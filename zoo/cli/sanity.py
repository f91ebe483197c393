"""`zoo sanity`: the classic sanity checks of a training setup."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    sanity = arguments.command(
        commands, "sanity", summary="initial loss, L2 effect, overfit a tiny subset",
        description="The training playbook's three sanity checks of the recipe's model: the "
        "initial loss is near ln(classes), L2 regularization raises it, and the model can "
        "overfit 20 training examples. Exits 1 if one fails.",
        examples=["zoo sanity mnist1d/cnn_paper",
                  "zoo sanity digits/mlp model.dropout=0"])
    arguments.recipe_arguments(sanity)
    sanity.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.recipe import load_recipe
    from zoo.workflows.diagnostics import sanity

    checks = sanity(load_recipe(args.recipe, args.overrides))
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if all(c.passed for c in checks) else 1
