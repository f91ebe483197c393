"""`zoo compare`: runs side by side, a table and plots."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    compare = arguments.command(
        commands, "compare", summary="compare runs side by side: a table and plots",
        description="Group finished runs by configuration (the same recipe but for its seed) "
        "and print a table of the keys that differ and each metric as mean ± std over seeds, "
        "every row against the first with a 95% confidence interval, a Welch t-test and "
        "Benjamini-Hochberg adjusted p-values. The table (Markdown, CSV) and the plots go to "
        "build/compare/, and to the parent run's artifacts with --parent.",
        examples=["zoo compare --parent RUN_ID   # the parent id zoo ablate or zoo tune printed",
                  "zoo compare --experiment mnist1d --metric test_loss",
                  "zoo compare --runs RUN_ID RUN_ID"])
    which = compare.add_mutually_exclusive_group(required=True)
    which.add_argument("--parent", help="the children of this run (an ablation or a tune)")
    which.add_argument("--experiment",
                       help="every finished run of this experiment (one per dataset: mnist1d, "
                       "digits, ...)")
    which.add_argument("--runs", nargs="+", help="these run ids")
    compare.add_argument("--metric", default="test_accuracy",
                         help="the metric compared against the first row, the baseline "
                         "(default: test_accuracy)")
    compare.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.workflows.compare import compare

    table, files = compare(parent=args.parent, experiment=args.experiment,
                           run_ids=args.runs or (), metric=args.metric)
    print(table.text())
    print()
    for kind, path in files.items():
        print(f"{kind:<9} {path}")
    return 0
