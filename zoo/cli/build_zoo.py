"""`zoo build-zoo`: train the zoo entries over seeds and ship one of each."""

from __future__ import annotations

from zoo.cli import arguments
from zoo.cli.listing import pretrained_listing


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    build = arguments.command(
        commands, "build-zoo", summary="train the zoo entries over seeds, ship one each",
        description="Train every zoo entry (or the NAMEs given) over seeds 0 .. N-1, ship the "
        "seed with the best validation accuracy to zoo/pretrained/, update the manifest "
        "and the README's table, and register what it shipped in the MLflow Model Registry "
        "(make zoo).",
        examples=["zoo build-zoo", "zoo build-zoo mnist1d/cnn_paper digits/mlp --workers 2"])
    build.add_argument("names", nargs="*", metavar="NAME",
                       help="entries to (re)build (default: all; zoo list pretrained)")
    build.add_argument("--seeds", type=int, default=3,
                       help="seeds 0 .. N-1 per entry (default: 3)")
    arguments.workers_argument(build, "entry and seed")
    arguments.no_track_argument(build)
    build.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo import paths
    from zoo.workflows.build_zoo import ENTRIES, build_zoo, update_benchmark_page, update_readme

    names = args.names or tuple(ENTRIES)
    from zoo.workflows.workers import shared_address

    manifest = build_zoo(names, seeds=tuple(range(args.seeds)), workers=args.workers,
                         track=not args.no_track, address=shared_address("build-zoo"))
    readme = paths.project_root() / "README.md"
    if readme.exists() and update_readme(manifest, readme):
        print(f"zoo: updated the zoo table in {readme}")
    page = paths.project_root() / "docs" / "pretrained.md"
    if update_benchmark_page(manifest, page):
        print(f"zoo: updated the benchmark table in {page}")
    for line in pretrained_listing():
        print(line)
    if not args.no_track:
        from zoo.workflows.register import register_pretrained

        for registered in register_pretrained(names):
            print(registered.line(), flush=True)
    return 0
