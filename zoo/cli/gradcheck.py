"""`zoo gradcheck`: analytic against numeric gradients."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    gradcheck = arguments.command(
        commands, "gradcheck", summary="check analytic against numeric gradients",
        description="Compare the recipe's model's gradients with centered differences, in "
        "float64, on sampled entries of every weight tensor: without regularization, then with "
        "the recipe's (or l2=0.001 if it has none). Exits 1 if a gradient is wrong.",
        examples=["zoo gradcheck mnist1d/cnn_paper",
                  "zoo gradcheck digits/mlp regularization.l1=0.001"])
    arguments.recipe_arguments(gradcheck)
    gradcheck.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.recipe import load_recipe
    from zoo.workflows.diagnostics import STEPS, gradcheck

    recipe = load_recipe(args.recipe, args.overrides)
    reg = recipe.regularization
    if not (reg.l1 or reg.l2):
        # Without a penalty of its own the second pass would repeat the first: check L2 anyway.
        recipe = recipe.with_overrides({"regularization.l2": 1e-3})
    wrong, checks = False, []
    for regularized in (False, True):
        penalty = (f"with regularization (l1={recipe.regularization.l1:g}, "
                   f"l2={recipe.regularization.l2:g})" if regularized
                   else "without regularization")
        print(f"{recipe.name}: gradient check, float64, {penalty}")
        for check in gradcheck(recipe, regularized=regularized):
            kinks = (f"; {check.kinks} crossed a kink at h={STEPS[0]:g}, measured again with "
                     "smaller steps" if check.kinks else "")
            if check.unresolved:
                kinks += f"; {check.unresolved} on a kink at every step"
            print(f"  {check.name:<32} max relative error {check.max_relative_error:.2e}  "
                  f"{check.verdict} ({check.samples} samples{kinks})")
            wrong |= check.verdict == "wrong"
            checks.append(check)
    worst = max(checks, key=lambda check: check.max_relative_error)
    print(f"{'FAIL' if wrong else 'PASS'}  {len(checks)} tensor checks; worst {worst.name} "
          f"{worst.max_relative_error:.2e} ({worst.verdict})")
    return 1 if wrong else 0
