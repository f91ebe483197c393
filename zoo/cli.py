"""The `zoo` command: a thin layer over the package's functions.

User errors (bad recipe, missing data, NaN loss) print one line `zoo: error: ...` and exit 2;
Ctrl-C and SIGTERM exit 130 after the MLflow run is marked KILLED.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import textwrap

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Descriptions are filled to an 80-column terminal less argparse's margin.
HELP_WIDTH = 78
# Subcommands for the processes the zoo starts itself (tuning and grid workers), not for users.
INTERNAL_COMMANDS = ("tune-role", "jobs-role")


def main(argv: list[str] | None = None) -> int:
    """Run one `zoo` command (`argv` without the program name; `sys.argv[1:]` when None).

    Returns:
        The exit status: 0, `EXIT_USER_ERROR` after a one-line error for bad input, or
        `EXIT_INTERRUPTED` after Ctrl-C or SIGTERM.
    """
    args = parse_args(argv)  # (zoo/__init__ has already quietened TensorFlow's C++ start-up logs)

    from zoo import interrupt
    from zoo.errors import ZooError

    interrupt.install()
    _print_deprecations_on_one_line()
    try:
        return args.handler(args) or 0
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("zoo: interrupted; any MLflow run was marked KILLED and no model file was "
              "written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _print_deprecations_on_one_line() -> None:
    """The zoo's own deprecation warnings read like its errors, `zoo: warning: ...`, without
    the file, line and source that Python's format adds for a programmer; other warnings keep
    that format."""
    import warnings

    from zoo.errors import ZooDeprecation

    python_format = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None):
        if issubclass(category, ZooDeprecation):
            return f"zoo: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = formatted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line (`sys.argv[1:]` when `argv` is None).

    Exits with status 2 and argparse's usage message when the command line does not parse.
    """
    parser = _parser()
    # Overrides may follow options too (`zoo ablate R --axis a=1,2 training.epochs=3`), which
    # argparse's positional handling alone would refuse.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _parser() -> argparse.ArgumentParser:
    from zoo import __version__

    parser = argparse.ArgumentParser(
        prog="zoo", description="Train, compare and load small Keras models from YAML recipes.",
        epilog="`zoo COMMAND --help` explains a command and its options, with examples.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    # `zoo --help` lists the commands that have a `help`; the internal roles have none.
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _PUBLIC_COMMANDS:
        add_command(commands)
    _add_internal_roles(commands)
    return parser


def _command(commands, name: str, *, summary: str, description: str,
             examples: list[str]) -> argparse.ArgumentParser:
    """Add a public subcommand.

    Args:
        commands: the subparsers action of the `zoo` parser.
        name: the subcommand.
        summary: its line in `zoo --help`.
        description: what it does, shown first by `zoo NAME --help`.
        examples: command lines, shown one a line under "examples:" by `zoo NAME --help`.

    Returns:
        The subcommand's parser, for its arguments.
    """
    return commands.add_parser(
        name, help=summary, description=textwrap.fill(description, HELP_WIDTH),
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
        # The raw formatter keeps every example on a line of its own (and so does not wrap the
        # description, which is filled above).
        formatter_class=argparse.RawDescriptionHelpFormatter)


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="short name (mnist1d/cnn_paper; zoo list recipes) or "
                        "path to a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, values parsed as YAML (model.dropout=0.3); "
                        "every key: zoo list keys")


def _workers_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="training processes at once, through Keras Tuner's chief and "
                        f"workers (default: one per core, at most one per {unit}); 1 trains "
                        "in this process")


def _no_track_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-track", action="store_true", help="do not record an MLflow run")


def _host_and_port_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default: 5000)")


def _add_train(commands) -> None:
    train = _command(
        commands, "train", summary="train a recipe and record an MLflow run",
        description="Train a recipe and record an MLflow run: evaluate the model once on the "
        "test split, save it under models/ and print its test accuracy, run id and path. Any "
        "recipe key can be overridden on the command line as dotted.key=value.",
        examples=["zoo train mnist1d/cnn_paper",
                  "zoo train mnist1d/cnn_paper training.epochs=5",
                  "zoo train digits/cnn model.dropout=0.3 seed=1 --json",
                  "zoo train recipes/mnist1d/mlp.yaml optimizer.name=sgd --no-track"])
    _recipe_arguments(train)
    train.add_argument("--json", action="store_true",
                       help="print a JSON object with run id, metrics and model path last")
    _no_track_argument(train)
    train.set_defaults(handler=_train)


def _add_tune(commands) -> None:
    tune = _command(
        commands, "tune", summary="tune a recipe's tune.space with Keras Tuner",
        description="Search the recipe's tune.space; each trial is an MLflow child run. Running "
        "it again resumes the search. The best trial is written as a complete recipe beside "
        "the one tuned (<name>.tuned.yaml), ready for zoo train.",
        examples=["zoo tune mnist1d/mlp",
                  "zoo tune mnist1d/mlp tune.max_trials=4 training.epochs=20 --workers 2",
                  "zoo tune mnist1d/mlp --refine",
                  "zoo tune mnist1d/mlp --overwrite"])
    _recipe_arguments(tune)
    tune.add_argument("--overwrite", action="store_true",
                      help="discard a saved search of this recipe instead of resuming it")
    tune.add_argument("--refine", action="store_true",
                      help="second pass over a narrower space around the best trials")
    tune.add_argument("--workers", type=int, default=None,
                      help="N > 1 runs Keras Tuner's chief and N worker processes on this "
                      "machine, 1 searches in this process (default: one per core, at most "
                      "one per trial; 1 for a bayesian search)")
    tune.set_defaults(handler=_tune)


def _add_ablate(commands) -> None:
    ablate = _command(
        commands, "ablate", summary="train a grid of switches over seeds",
        description="Every combination of the axes, each over --seeds seeds, as child runs of "
        "one MLflow parent; resumable: the same command again skips the finished cells. "
        "Overrides apply to every cell. Compare the cells with zoo compare --parent.",
        examples=["zoo ablate mnist1d/cnn --axis model.dropout=0,0.3 --seeds 2",
                  "zoo ablate mnist1d/cnn_plain --axis model.normalization=batch,layer,none",
                  "zoo ablate mnist1d/cnn --axis model.residual=false,true training.epochs=10",
                  "zoo ablate mnist1d/mlp_plain --axis overlay=aug_shift_noise,none --workers 2"])
    _recipe_arguments(ablate)
    ablate.add_argument("--axis", action="append", required=True, metavar="key=v1,v2",
                        help="a recipe key and its values, once per axis (at least one); "
                        "overlay=NAME,none for recipes/overlays/<kind>/NAME.yaml")
    ablate.add_argument("--seeds", type=int, default=3,
                        help="seeds per cell: seed, seed+1, ... (default: 3)")
    _workers_argument(ablate, "run left")
    ablate.set_defaults(handler=_ablate)


def _add_compare(commands) -> None:
    compare = _command(
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
    compare.set_defaults(handler=_compare)


def _add_gradcheck(commands) -> None:
    gradcheck = _command(
        commands, "gradcheck", summary="check analytic against numeric gradients",
        description="Compare the recipe's model's gradients with centered differences, in "
        "float64, on sampled entries of every weight tensor: without regularization, then with "
        "the recipe's (or l2=0.001 if it has none). Exits 1 if a gradient is wrong.",
        examples=["zoo gradcheck mnist1d/cnn_paper",
                  "zoo gradcheck digits/mlp regularization.l1=0.001"])
    _recipe_arguments(gradcheck)
    gradcheck.set_defaults(handler=_gradcheck)


def _add_sanity(commands) -> None:
    sanity = _command(
        commands, "sanity", summary="initial loss, L2 effect, overfit a tiny subset",
        description="The training playbook's three sanity checks of the recipe's model: the "
        "initial loss is near ln(classes), L2 regularization raises it, and the model can "
        "overfit 20 training examples. Exits 1 if one fails.",
        examples=["zoo sanity mnist1d/cnn_paper",
                  "zoo sanity digits/mlp model.dropout=0"])
    _recipe_arguments(sanity)
    sanity.set_defaults(handler=_sanity)


def _add_lr_find(commands) -> None:
    lr_find = _command(
        commands, "lr-find", summary="learning-rate range test: loss against rate",
        description="Train a fresh model for --steps batches with the learning rate rising "
        "from --start to --end; plot the loss against the rate and suggest one. Exits 1 if the "
        "loss gives no rate to suggest.",
        examples=["zoo lr-find mnist1d/cnn_paper",
                  "zoo lr-find digits/mlp optimizer.name=sgd --steps 100 --end 1 --no-track"])
    _recipe_arguments(lr_find)
    lr_find.add_argument("--steps", type=int, default=200,
                         help="optimizer steps (default: 200)")
    lr_find.add_argument("--start", type=float, default=1e-7,
                         help="first learning rate (default: 1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0,
                         help="last learning rate (default: 10)")
    lr_find.add_argument("--out", default=None,
                         help="PNG path (default: build/lr-find/<recipe>.png)")
    _no_track_argument(lr_find)
    lr_find.set_defaults(handler=_lr_find)


def _add_server(commands) -> None:
    server = _command(
        commands, "server", summary="MLflow tracking server for concurrent writers",
        description="Run an MLflow tracking server that many processes or machines can log to "
        "at once, over the zoo's SQLite store or a database such as PostgreSQL. Point the zoo "
        "at it with MLFLOW_TRACKING_URI.",
        examples=["zoo server",
                  "zoo server --backend postgresql://zoo@db.example.org/zoo --port 5001",
                  "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 zoo train mnist1d/cnn_paper"])
    server.add_argument("--backend", default=None,
                        help="backend store URI (default: the zoo's SQLite store; e.g. "
                        "postgresql://user:password@host/db)")
    _host_and_port_arguments(server)
    server.set_defaults(handler=_server)


def _add_augment_preview(commands) -> None:
    preview = _command(
        commands, "augment-preview",
        summary="write a PNG grid of original and augmented samples",
        description="Write a PNG grid of training examples, each followed by augmented "
        "versions of it, to see what the recipe's data.augmentation does before training "
        "with it.",
        examples=["zoo augment-preview mnist1d/cnn_paper",
                  "zoo augment-preview digits/cnn_aug --samples 4 --out build/digits_aug.png"])
    _recipe_arguments(preview)
    preview.add_argument("--out", default=None,
                         help="PNG path (default: build/augment-preview/<recipe>.png)")
    preview.add_argument("--samples", type=int, default=6,
                         help="training examples, one a row (default: 6)")
    preview.set_defaults(handler=_augment_preview)


def _add_list(commands) -> None:
    listing = _command(
        commands, "list", summary="list models, datasets, recipes, pretrained or keys",
        description="Print the registered model builders, the datasets, the recipes under "
        "recipes/, the pretrained models with their test accuracy, or every recipe key with "
        "its default and meaning.",
        examples=["zoo list recipes", "zoo list pretrained", "zoo list keys", "zoo list all"])
    listing.add_argument("what", choices=["models", "datasets", "recipes", "pretrained", "keys",
                                          "all"],
                         help="what to list; all: everything but the recipe keys, which have a "
                         "table of their own")
    listing.set_defaults(handler=_list)


def _add_predict(commands) -> None:
    predict = _command(
        commands, "predict", summary="classes and probabilities from a pretrained model",
        description="Predict with a pretrained model: for each example in the file, the most "
        "likely class and the top classes with their probabilities. Raw inputs, as the "
        "dataset stores them: standardization is inside the model.",
        examples=["zoo predict mnist1d/cnn inputs.npy   # shape (40,), (40, 1) or (N, 40)",
                  "zoo predict digits/cnn digit.png     # any image, made 8x8 grayscale",
                  "zoo predict digits/mlp inputs.npy --top 1"])
    predict.add_argument("name", help="a pretrained model (zoo list pretrained)")
    predict.add_argument("file", help="a .npy array (one example or a batch), or an image file "
                         "for image models")
    predict.add_argument("--top", type=int, default=3,
                         help="classes shown per example (default: 3)")
    predict.set_defaults(handler=_predict)


def _add_build_zoo(commands) -> None:
    build = _command(
        commands, "build-zoo", summary="train the zoo entries over seeds, ship one each",
        description="Train every zoo entry (or the NAMEs given) over seeds 0 .. N-1, ship the "
        "seed with the best validation accuracy to zoo/pretrained/, and update the manifest "
        "and the README's table (make zoo).",
        examples=["zoo build-zoo", "zoo build-zoo mnist1d/cnn_paper digits/mlp --workers 2"])
    build.add_argument("names", nargs="*", metavar="NAME",
                       help="entries to (re)build (default: all; zoo list pretrained)")
    build.add_argument("--seeds", type=int, default=3,
                       help="seeds 0 .. N-1 per entry (default: 3)")
    _workers_argument(build, "entry and seed")
    build.set_defaults(handler=_build_zoo)


def _add_reproduce(commands) -> None:
    reproduce = _command(
        commands, "reproduce", summary="retrain a pretrained model, compare with its manifest",
        description="Retrain a pretrained model from the recipe and seed in its manifest and "
        "compare it with the shipped one: it reproduces with identical weights or a test "
        "accuracy within half a percentage point. Exits 1 if it does not (make reproduce "
        "MODEL=).",
        examples=["zoo reproduce mnist1d/cnn_paper", "zoo reproduce digits/mlp --no-track"])
    reproduce.add_argument("name", help="a pretrained model (zoo list pretrained)")
    _no_track_argument(reproduce)
    reproduce.set_defaults(handler=_reproduce)


def _add_ui(commands) -> None:
    ui = _command(
        commands, "ui", summary="serve the MLflow UI over the zoo's store",
        description="Serve the MLflow UI over the zoo's store (or MLFLOW_TRACKING_URI) and "
        "print a link to each experiment's runs.",
        examples=["zoo ui", "zoo ui --port 5001"])
    _host_and_port_arguments(ui)
    ui.set_defaults(handler=_ui)


def _add_bench(commands) -> None:
    bench = _command(
        commands, "bench", summary="the speed contract as ratios measured in one run",
        description="Time zoo training against bare Keras fits, the default recipe against the "
        "plain one, a 4-cell ablation on 2 workers against 1, and the monitor, tracking and "
        "tuning overheads; print each ratio with its target (make bench).",
        examples=["zoo bench", "zoo bench --repeats 1"])
    bench.add_argument("--repeats", type=int, default=2,
                       help="timed runs of each training side; the fastest of each is compared "
                       "(default: 2)")
    bench.set_defaults(handler=_bench)


def _add_internal_roles(commands) -> None:
    """The processes the zoo starts itself; without a `help`, `zoo --help` leaves them out."""
    tune_role = commands.add_parser("tune-role")  # a chief or worker of a distributed search
    tune_role.add_argument("recipe")
    tune_role.add_argument("--directory", required=True)
    tune_role.add_argument("--parent-run", required=True)
    tune_role.set_defaults(handler=_tune_role)

    jobs_role = commands.add_parser("jobs-role")  # a chief or worker of a job list
    jobs_role.add_argument("jobs")
    jobs_role.set_defaults(handler=_jobs_role)


# In the order `zoo --help` lists them.
_PUBLIC_COMMANDS = (_add_train, _add_tune, _add_ablate, _add_compare, _add_gradcheck, _add_sanity,
                    _add_lr_find, _add_server, _add_augment_preview, _add_list, _add_predict,
                    _add_build_zoo, _add_reproduce, _add_ui, _add_bench)


def _train(args) -> int:
    from zoo.recipe import load_recipe
    from zoo.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"zoo: training {recipe.name} on {recipe.data.dataset} "
          f"(model {recipe.model.name}, seed {recipe.seed}, "
          f"fingerprint {recipe.fingerprint[:12]})", flush=True)
    result = train(recipe, track=not args.no_track, verbose=1 if sys.stdout.isatty() else 2)
    print(f"\ntest_accuracy  {result.test_accuracy:.4f}")
    print(f"test_loss      {result.test_loss:.4f}")
    print(f"epochs         {result.epochs} in {result.seconds:.1f} s")
    if result.run_id:
        print(f"mlflow run     {result.run_id} (experiment {recipe.data.dataset}; "
              "browse with `make ui`)")
    print(f"model          {result.model_path}")
    if args.json:
        print(json.dumps(result.summary()))
    return 0


def _tune(args) -> int:
    from zoo.recipe import load_recipe
    from zoo.tune import refine, tune

    recipe = load_recipe(args.recipe, args.overrides)
    if args.refine:
        result = refine(recipe, workers=args.workers)
    else:
        result = tune(recipe, overwrite=args.overwrite, workers=args.workers)
    print(f"\nbest           {json.dumps(result.best_values)}")
    print(f"{recipe.tune.objective.name:<14} {result.best_score:.4f}")
    print(f"mlflow run     {result.parent_run_id} (parent; one child run per trial)")
    print(f"tuned recipe   {result.tuned_recipe_path} (train it with `zoo train "
          f"{result.tuned_recipe_path}`)")
    return 0


def _ablate(args) -> int:
    from zoo.workers import WorkerPool, check_workers, cores

    check_workers(args.workers, "ablate")
    # The other workers start first: they import TensorFlow while this process loads and checks
    # the grid and opens its MLflow run, and are ready when the first job is.
    with WorkerPool.started((args.workers or cores()) - 1) as pool:
        from zoo.ablate import ablate, parse_axis
        from zoo.recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        parent = ablate(recipe, [parse_axis(a) for a in args.axis], seeds=args.seeds,
                        workers=args.workers, pool=pool)
    print(f"\nmlflow run     {parent} (parent)\ncompare with   zoo compare --parent {parent}")
    return 0


def _compare(args) -> int:
    from zoo.compare import compare

    table, files = compare(parent=args.parent, experiment=args.experiment,
                           run_ids=args.runs or (), metric=args.metric)
    print(table.text())
    print()
    for kind, path in files.items():
        print(f"{kind:<9} {path}")
    return 0


def _gradcheck(args) -> int:
    from zoo.diagnostics import STEPS, gradcheck
    from zoo.recipe import load_recipe

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


def _sanity(args) -> int:
    from zoo.diagnostics import sanity
    from zoo.recipe import load_recipe

    checks = sanity(load_recipe(args.recipe, args.overrides))
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if all(c.passed for c in checks) else 1


def _lr_find(args) -> int:
    from zoo.lr_find import lr_find
    from zoo.recipe import load_recipe

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
        print(f"mlflow run     {result.run_id} (experiment {recipe.data.dataset})")
    return 0 if result.suggested is not None else 1


def _tune_role(args) -> int:
    from pathlib import Path

    from zoo.recipe import load_recipe
    from zoo.tune import run_role

    return run_role(load_recipe(args.recipe), Path(args.directory), args.parent_run)


def _jobs_role(args) -> int:
    from pathlib import Path

    from zoo.workers import run_job_role

    return run_job_role(Path(args.jobs))


def _server(args) -> int:
    from zoo import server, tracking

    backend = args.backend or tracking.tracking_uri()
    print(f"zoo: MLflow tracking server over {backend} on http://{args.host}:{args.port}; "
          f"point workers at it with MLFLOW_TRACKING_URI=http://{args.host}:{args.port}")
    sys.stdout.flush()
    command = server.server_command(backend, args.host, args.port, workers=4)
    os.execv(command[0], command)
    return 0


def _augment_preview(args) -> int:
    from zoo import paths
    from zoo.augment import preview
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = args.out or paths.project_root() / "build" / "augment-preview" / (
        recipe.name.replace("/", "_") + ".png")
    print(f"zoo: wrote {preview(recipe, out, samples=args.samples)}")
    return 0


def _list(args) -> int:
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
        return _pretrained_listing()
    if section == "keys":
        from zoo.recipe_keys import text_table

        return text_table()
    from zoo.recipe import list_recipes

    return list_recipes()


def _pretrained_listing() -> list[str]:
    from zoo.pretrained import list_pretrained

    lines = [f"{'name':<18} {'test accuracy (3 seeds)':<24} {'target':<12} {'shipped':<16} "
             f"{'params':>8}"]
    for row in list_pretrained():
        target = row["target"]
        met = "" if target is None else (
            f">={target:.2f} {'ok' if row['test_accuracy_mean'] >= target else 'MISSED'}")
        lines.append(
            f"{row['name']:<18} {row['test_accuracy_mean']:.4f} ± {row['test_accuracy_std']:.4f}"
            f"{'':<8} {met:<12} seed {row['shipped_seed']} {row['shipped_test_accuracy']:.4f} "
            f"{row['params']:>8,}")
    return lines


def _predict(args) -> int:
    from zoo.pretrained.predict import predict

    for i, row in enumerate(predict(args.name, args.file, top=args.top)):
        ranked = "  ".join(f"{label} {p:.3f}" for label, p in row)
        print(f"{i}: {row[0][0]}   ({ranked})")
    return 0


def _build_zoo(args) -> int:
    from zoo import paths
    from zoo.pretrained.build import ENTRIES, build_zoo, update_readme

    manifest = build_zoo(args.names or tuple(ENTRIES), seeds=tuple(range(args.seeds)),
                         workers=args.workers)
    readme = paths.project_root() / "README.md"
    if readme.exists() and update_readme(manifest, readme):
        print(f"zoo: updated the zoo table in {readme}")
    for line in _pretrained_listing():
        print(line)
    return 0


def _reproduce(args) -> int:
    from zoo.pretrained.reproduce import reproduce

    print(f"zoo: retraining {args.name} from its manifest recipe ...", flush=True)
    result = reproduce(args.name, track=not args.no_track)
    print(result.report())
    return 0 if result.verdict.startswith("reproduced") else 1


def _ui(args) -> int:
    from zoo import server, tracking

    uri = tracking.tracking_uri()
    links = _runs_view_links(f"http://{args.host}:{args.port}")
    print(f"zoo: MLflow UI over {uri}")
    for line in links or ["no runs yet: train one with `make train`"]:
        print(f"  {line}")
    sys.stdout.flush()
    # One person browsing: MLflow's own number of web workers will do.
    command = server.server_command(uri, args.host, args.port, workers=None)
    os.execv(command[0], command)
    return 0


def _runs_view_links(base: str) -> list[str]:
    """Each experiment's name and the link to its runs: MLflow 3's UI otherwise opens on its
    GenAI view."""
    from zoo import tracking

    experiments = [e for e in tracking.client().search_experiments() if e.name != "Default"]
    return [f"{e.name:<16} {base}/#/experiments/{e.experiment_id}"
            "/runs?workflowType=machine_learning" for e in experiments]


def _bench(args) -> int:
    from zoo.bench import run_bench

    if args.repeats < 1:
        from zoo.errors import ArgumentError

        raise ArgumentError(f"bench: --repeats must be at least 1 (received {args.repeats})")
    run_bench(repeats=args.repeats)
    return 0


def run() -> None:
    """The `zoo` command: `main`, then exit with its status."""
    status = main()
    # A process that imported TensorFlow spends most of a second at exit in the collector's
    # passes over its millions of objects; frozen, they are skipped. At-exit handlers still run
    # (before the interpreter's own collection), and Python never promised to finalize the
    # objects still alive at exit.
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
