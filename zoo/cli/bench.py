"""`zoo bench`: the speed contract, as ratios measured in one run."""

from __future__ import annotations

from zoo.cli import arguments


def add(commands) -> None:
    """Add the command to the `zoo` parser's subcommands."""
    bench = arguments.command(
        commands, "bench", summary="the speed contract as ratios measured in one run",
        description="Time zoo training against bare Keras fits, the default recipe against the "
        "plain one, a 4-cell ablation on 2 workers against 1, and the monitor, tracking and "
        "tuning overheads; print each ratio with its target (make bench).",
        examples=["zoo bench", "zoo bench --repeats 1"])
    bench.add_argument("--repeats", type=int, default=5,
                       help="rounds of the zoo training sides, at most (default: 5); after the "
                       "second, a round runs only if it would end within the bench's time; each "
                       "overhead is the median of its ratios within a round")
    bench.set_defaults(handler=handle)


def handle(args) -> int:
    """Run the command; returns its exit status."""
    from zoo.workflows.bench import run_bench

    if args.repeats < 1:
        from zoo.errors import ArgumentError

        raise ArgumentError(f"bench: --repeats must be at least 1 (received {args.repeats})")
    run_bench(repeats=args.repeats)
    return 0
