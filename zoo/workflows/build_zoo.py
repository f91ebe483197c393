"""`make zoo`: train every zoo entry over seeds, ship one model each, write the manifest.

Each entry is a recipe under recipes/. Every seed is a normal tracked `zoo train` run (tagged
`zoo.pretrained`), so the runs behind the manifest can be compared in MLflow. The shipped seed is
the one with the best final validation accuracy: the test split is evaluated once per run and
never used to choose anything.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo import mlflow_layout as layout
from zoo.errors import ArgumentError
from zoo.files import write_text_atomically
from zoo.pretrained.loader import MANIFEST_NAME, PRETRAINED_DIR, target_text

# Entry -> test accuracy target (mean over seeds) on the data set's fixed test split.
ENTRIES: dict[str, float] = {
    "mnist1d/linear": 0.30,
    "mnist1d/mlp": 0.85,
    "mnist1d/cnn_paper": 0.92,
    "mnist1d/cnn": 0.99,
    "digits/mlp": 0.97,
    "digits/cnn": 0.99,
    "fashion_mnist/mlp": 0.90,
    "fashion_mnist/cnn_small": 0.935,
    "fashion_mnist/resnet": 0.95,
}
SEEDS = (0, 1, 2)


def build_zoo(names: Sequence[str] = tuple(ENTRIES), seeds: Sequence[int] = SEEDS,
              directory: Path = PRETRAINED_DIR, track: bool = True,
              overrides: Sequence[str] = (), model_dir: Path | None = None,
              workers: int | None = 1,
              address: tuple[str, int] | None = None) -> dict[str, Any]:
    """Train `names` over `seeds`, ship the best-validated seed of each, update the manifest.

    Entries not in `names` keep their manifest rows, so one entry can be rebuilt alone.
    `overrides` (dotted `k=v`) apply to every entry; meant for quick test builds. Each seed's
    full model (with optimizer state) stays under `model_dir` (default models/) as usual.
    `workers`: 1 trains in this process, N > 1 in N worker processes (`zoo.workers`), None one
    per core; an entry is shipped as soon as all its seeds are in. Each seed's result depends
    on its recipe and seed only, so the manifest does not depend on the number of workers.
    `address`: (host, port) to serve the jobs on to workers on other machines (`zoo join`),
    whose models come back through the MLflow tracking server.

    Returns:
        The manifest written.
    """
    from zoo.recipe import load_recipe
    from zoo.workflows.workers import Job, check_workers, pick_workers, run_jobs

    if not seeds:
        raise ArgumentError("build-zoo: --seeds must be at least 1 (received 0)")
    check_workers(workers, "build-zoo")
    recipes = {name: load_recipe(name, overrides) for name in names}  # all errors up front
    path = directory / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    # Longest first, by the last build's times (entries never built first of all): with the
    # long ones last, one worker trained the last of them alone while the others sat idle
    # (`make zoo` on 2 cores: 5.3 min, 4.7 longest first). A job's result does not depend on
    # when it runs.
    expected = {name: _last_seconds(manifest, name) for name in recipes}
    order = sorted(recipes, key=lambda name: -expected[name])  # stable: seeds stay in order
    jobs = [Job(recipes[name].with_overrides({"seed": seed}), f"{name} seed {seed}",
                track=track, model_dir=model_dir, tags={layout.PRETRAINED: recipes[name].name})
            for name in order for seed in seeds]
    entry_of = [name for name in order for _ in seeds]
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in recipes}
    started, total, finished = time.perf_counter(), len(jobs), 0

    def starting(index: int) -> None:
        print(f"[{index + 1}/{total}] {jobs[index].label} ...", flush=True)

    def done(index: int, result) -> None:
        nonlocal finished
        finished += 1
        name, recipe = entry_of[index], jobs[index].recipe
        run = _seed_run(recipe, result)
        runs[name][index] = run
        print(f"[{finished}/{total}] {jobs[index].label}: test_accuracy "
              f"{run['test_accuracy']:.4f}, val_accuracy {run['val_accuracy']:.4f} in "
              f"{_minutes(run['seconds'])}; elapsed {_minutes(time.perf_counter() - started)}",
              flush=True)
        if len(runs[name]) == len(seeds):  # in seed order, however they finished
            _ship_entry(manifest, name, [runs[name][i] for i in sorted(runs[name])], directory)

    run_jobs(jobs, pick_workers(workers, len(jobs), "build-zoo"), name="build-zoo",
             on_start=starting, on_done=done, address=address)
    return manifest


def _last_seconds(manifest: dict[str, Any], name: str) -> float:
    """The mean training time per seed of an entry's last build; infinite if it has none."""
    times = manifest["entries"].get(name, {}).get("train_seconds") or {}
    return sum(times.values()) / len(times) if times else float("inf")


def _seed_run(recipe, result) -> dict[str, Any]:
    """One seed's row: what `_ship` and the manifest need of a finished training job."""
    return {
        "seed": recipe.seed,
        "recipe": recipe,
        "result": result,  # its model is loaded only if this seed is shipped
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "val_accuracy": result.history["val_accuracy"][-1],
        "epochs": result.epochs,
        "seconds": result.seconds,
        "run_id": result.run_id,
        "weights_sha256": result.weights_sha256,
    }


def _ship_entry(manifest: dict[str, Any], name: str, runs: list[dict[str, Any]],
                directory: Path) -> None:
    environment = _environment()
    # Each entry says where and when it was built (an entry rebuilt alone is built elsewhere
    # than the others); the top level repeats the last build's.
    manifest["entries"][name] = {**_ship(name, runs, directory), **environment}
    manifest.update(environment)
    write_manifest(manifest, directory)
    print(f"{name}: test_accuracy {_mean_std(runs, 'test_accuracy')} over {len(runs)} "
          f"seeds, shipped seed {manifest['entries'][name]['seed']} "
          f"(target {ENTRIES.get(name, 'none')})", flush=True)


def _ship(name: str, runs: list[dict[str, Any]], directory: Path) -> dict[str, Any]:
    """Save the best-validated run's model for inference and describe it for the manifest."""
    from zoo.data import recipe_splits
    from zoo.models import inference_copy
    from zoo.training.model_files import save_model_atomically, weights_sha256

    best = max(runs, key=lambda run: (run["val_accuracy"], -run["seed"]))
    recipe = best["recipe"]
    model = inference_copy(best["result"].load_model())
    if weights_sha256(model) != best["weights_sha256"]:
        raise RuntimeError(f"{name}: the inference copy's weights differ from the trained ones")
    relative = f"{name}.keras"
    save_model_atomically(model, directory / relative)
    splits = recipe_splits(recipe)
    entry = {
        "file": relative,
        "sha256": hashlib.sha256((directory / relative).read_bytes()).hexdigest(),
        "bytes": (directory / relative).stat().st_size,
        "weights_sha256": best["weights_sha256"],
        "seed": best["seed"],
        "fingerprint": recipe.fingerprint,
        "recipe": recipe.resolved(),
        "target": ENTRIES.get(name),
        "metrics": {
            "test_accuracy": _summary(runs, "test_accuracy"),
            "test_loss": _summary(runs, "test_loss"),
            "val_accuracy": _summary(runs, "val_accuracy"),
            "shipped": {k: best[k] for k in ("test_accuracy", "test_loss", "val_accuracy")},
        },
        "selection": "shipped seed = highest final val_accuracy (lowest seed on ties)",
        "epochs": best["epochs"],
        "params": int(model.count_params()),
        "input_shape": list(splits.input_shape),
        "input_range": [float(splits.x_train.min()), float(splits.x_train.max())],
        "class_names": list(splits.class_names),
        "dataset": splits.name,
        "run_ids": {str(run["seed"]): run["run_id"] for run in runs},
        "train_seconds": {str(run["seed"]): round(run["seconds"], 1) for run in runs},
    }
    write_card(name, entry, directory)
    return entry


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [run[key] for run in runs]
    return {
        "mean": statistics.fmean(values),
        # Sample standard deviation (n - 1); 0 for a single seed.
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": {str(run["seed"]): run[key] for run in runs},
    }


def _mean_std(runs: list[dict[str, Any]], key: str) -> str:
    summary = _summary(runs, key)
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def _environment() -> dict[str, Any]:
    from zoo.tracking import environment_tags

    tags = environment_tags()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": tags[layout.GIT_COMMIT],
        "versions": json.loads(tags[layout.VERSIONS]),
        "hardware": {"device": tags[layout.DEVICE], "cpu": tags[layout.CPU],
                     "platform": tags[layout.PLATFORM],
                     "machine": platform.machine(), "cpus": os.cpu_count()},
    }


def write_manifest(manifest: dict[str, Any], directory: Path = PRETRAINED_DIR) -> None:
    """Write the manifest atomically (a reader never sees half of it)."""
    write_text_atomically(directory / MANIFEST_NAME,
                      json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# --------------------------------------------------------------------------------------------
# Model cards and the README table


# Where each embedded data set comes from and under which terms (the cards repeat them).
DATA_TERMS = {
    "digits": "scikit-learn's copy (BSD-3-Clause) of the UCI Optical Recognition of Handwritten "
              "Digits data set (Alpaydin and Kaynak, 1998; CC BY 4.0)",
    "mnist1d": "MNIST-1D (Greydanus, 2020), built locally by the `mnist1d` package "
               "(Apache-2.0)",
    "fashion_mnist": "Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; Zalando SE, MIT licence), "
                     "read from its original IDX files",
}

# Small models of Fashion-MNIST's published benchmark table (the README of its repository, as
# Debian's dataset-fashion-mnist ships it): (model, parameters, preprocessing, test accuracy).
FASHION_MNIST_BENCHMARK = (
    ("MLP 256-128-100", "", "none", 0.8833),
    ("2 Conv <100K parameters", "<100K", "none", 0.925),
    ("2 Conv+pooling+BN", "", "none", 0.934),
    ("2 Conv+2 FC", "", "random horizontal flips", 0.939),
    ("ResNet18", "11M", "normalization, flips, translation, rotation", 0.949),
    ("DenseNet-BC", "768K", "standardization, random crops and flips", 0.954),
    ("WRN-28-10 + random erasing", "36M", "standardization, random crops and flips", 0.963),
    ("human (crowd-sourced, 1,000 test images)", "", "", 0.835),
)
PUBLISHED = {"fashion_mnist": FASHION_MNIST_BENCHMARK}


def benchmark_table(entries: dict[str, dict[str, Any]]) -> str:
    """The entries' mean test accuracies among their data set's published results, best first
    (the entries in bold); empty when the data set has no published table here.

    Args:
        entries: zoo entries of one data set, by name, as in the manifest.
    """
    datasets = {entry["dataset"] for entry in entries.values()}
    rows = PUBLISHED.get(datasets.pop()) if len(datasets) == 1 else None
    if not rows:
        return ""
    ours = []
    for name, entry in entries.items():
        accuracy = entry["metrics"]["test_accuracy"]
        ours.append((f"**`{name}`** (zoo, mean ± std over {len(accuracy['per_seed'])} seeds)",
                     f"{entry['params']:,}", _augmentation_text(entry["recipe"]),
                     accuracy["mean"], accuracy["std"]))
    lines = ["| model | parameters | preprocessing / augmentation | test accuracy |",
             "|---|---|---|---|"]
    for model, params, preprocessing, value, *std in sorted(
            [*rows, *ours], key=lambda row: -row[3]):
        shown = f"**{value:.4f} ± {std[0]:.4f}**" if std else f"{value:.3f}"
        lines.append(f"| {model} | {params} | {preprocessing} | {shown} |")
    return "\n".join(lines)


def _augmentation_text(recipe: dict[str, Any]) -> str:
    # The op's name first: the manifest stores each op's keys in alphabetical order.
    ops = [" ".join([str(op["op"]), *(f"{k} {v}" for k, v in op.items() if k != "op")])
           for op in recipe["data"]["augmentation"]]
    standardized = "standardization" if recipe["data"]["standardize"] else "none"
    return "; ".join([standardized, *ops])


def _benchmark_section(name: str, entry: dict[str, Any]) -> str:
    table = benchmark_table({name: entry})
    if not table:
        return ""
    return ("## Against the published benchmark\n\nThe small models of the data set's "
            "benchmark table, as its README publishes them (single runs, their own "
            f"preprocessing), and this entry:\n\n{table}\n\n")


def _verdict(accuracy: dict[str, Any], target: float) -> str:
    return "met" if accuracy["mean"] >= target else "NOT met"


def write_card(name: str, entry: dict[str, Any], directory: Path = PRETRAINED_DIR) -> Path:
    """A Markdown model card beside the model file."""
    import yaml

    metrics, seed = entry["metrics"], entry["seed"]
    accuracy, shipped = metrics["test_accuracy"], metrics["shipped"]
    seeds = sorted(accuracy["per_seed"], key=int)
    low, high = entry["input_range"]
    target = entry["target"]
    verdict = "" if target is None else (
        f" (target {target_text(target)}: {_verdict(accuracy, target)})")
    facts = [
        f"Test accuracy over seeds: {accuracy['mean']:.4f} ± {accuracy['std']:.4f} "
        f"(mean ± sample std){verdict}",
        f"Shipped seed {seed}: test accuracy {shipped['test_accuracy']:.4f}, "
        f"test loss {shipped['test_loss']:.4f}",
        f"Data set `{entry['dataset']}`: input shape {tuple(entry['input_shape'])}, raw values "
        f"in [{low:g}, {high:g}], classes {', '.join(entry['class_names'])}",
        f"{entry['params']:,} parameters; {entry['epochs']} epochs; file `{entry['file']}` "
        f"({entry['bytes']:,} bytes)",
        f"sha256 `{entry['sha256']}`; weights sha256 `{entry['weights_sha256']}`",
    ]
    rows = [f"| {s}{' (shipped)' if int(s) == seed else ''} | "
            f"{accuracy['per_seed'][s]:.4f} | {metrics['test_loss']['per_seed'][s]:.4f} | "
            f"{metrics['val_accuracy']['per_seed'][s]:.4f} |" for s in seeds]
    recipe_yaml = yaml.safe_dump(entry["recipe"], sort_keys=False).rstrip()
    data_terms = DATA_TERMS.get(entry["dataset"], f"the data set `{entry['dataset']}`")
    newline = "\n"
    text = f"""# {name}

Trained by `make zoo` from the recipe below over seeds {', '.join(seeds)}; the shipped seed is the
one with the best final validation accuracy. The test split was evaluated once per run and used
for nothing else.

{newline.join('- ' + fact for fact in facts)}

| seed | test accuracy | test loss | val accuracy |
|---|---|---|---|
{newline.join(rows)}

{_benchmark_section(name, entry)}## Use

```python
import zoo
model = zoo.load("{name}")      # checks the sha256 first; raw inputs in, class probabilities out
probabilities = model.predict(x_raw)
```

The file holds Keras built-in layers only (standardization is a `Normalization` layer inside the
model), so `keras.saving.load_model("zoo/pretrained/{entry['file']}")` loads it without the zoo.
It is saved without optimizer state and not compiled: compile it with
`loss="sparse_categorical_crossentropy", metrics=["accuracy"]` to evaluate on integer labels.

## Reproduce

`make reproduce MODEL={name}` retrains seed {seed} from this recipe and compares the weights
hash and metrics with the shipped ones.

```yaml
{recipe_yaml}
```

## Terms

The weights are released under the repository's license (Apache-2.0, `LICENSE`). They were
trained on {data_terms}; using them is also subject to that data set's terms.
"""
    path = directory / f"{name}.md"
    write_text_atomically(path, text)
    return path


TABLE_START, TABLE_END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def zoo_table(manifest: dict[str, Any]) -> str:
    """The README's table of shipped models, from the manifest."""
    lines = ["| model | test accuracy (mean ± std over seeds) | target | shipped seed "
             "| params | card |", "|---|---|---|---|---|---|"]
    for name, entry in sorted(manifest["entries"].items()):
        accuracy = entry["metrics"]["test_accuracy"]
        target = "" if entry["target"] is None else (
            f">= {target_text(entry['target'])} ({_verdict(accuracy, entry['target'])})")
        lines.append(
            f"| `{name}` | {accuracy['mean']:.4f} ± {accuracy['std']:.4f} | {target} | "
            f"{entry['seed']} ({entry['metrics']['shipped']['test_accuracy']:.4f}) | "
            f"{entry['params']:,} | [card](zoo/pretrained/{name}.md) |")
    return "\n".join(lines)


BENCHMARK_START, BENCHMARK_END = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"


def update_benchmark_page(manifest: dict[str, Any], page: Path) -> bool:
    """Replace the table between the page's benchmark-table markers with the Fashion-MNIST
    entries among the published results. False if there are no markers or no such entries."""
    entries = {name: entry for name, entry in manifest["entries"].items()
               if entry["dataset"] == "fashion_mnist"}
    text = page.read_text() if page.exists() else ""
    if not entries or BENCHMARK_START not in text or BENCHMARK_END not in text:
        return False
    head, rest = text.split(BENCHMARK_START, 1)
    _, tail = rest.split(BENCHMARK_END, 1)
    write_text_atomically(page, f"{head}{BENCHMARK_START}\n{benchmark_table(entries)}\n"
                                f"{BENCHMARK_END}{tail}")
    return True


def update_readme(manifest: dict[str, Any], readme: Path) -> bool:
    """Replace the table between the README's zoo-table markers. False if there are none."""
    text = readme.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        return False
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text_atomically(readme, f"{head}{TABLE_START}\n{zoo_table(manifest)}\n{TABLE_END}{tail}")
    return True
