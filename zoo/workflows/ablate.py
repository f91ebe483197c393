"""Ablation grids: every combination of some recipe switches, over several seeds, as MLflow child
runs of one parent. Running the same ablation again skips the finished cells."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import yaml

from zoo import mlflow_layout as layout
from zoo import paths, tracking
from zoo.errors import ArgumentError, RecipeError
from zoo.recipe import Recipe, describe_values, flatten
from zoo.workflows.workers import Job, JobResult, WorkerPool, check_workers, pick_workers, run_jobs

OVERLAY = "overlay"


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """`model.dropout=0,0.3` -> ("model.dropout", [0, 0.3]); values are YAML, commas inside
    brackets or braces belong to the value (`model.widths=[8, 8],[16]`)."""
    key, sep, rest = text.partition("=")
    if not sep or not key or not rest:
        raise RecipeError(f"command line: --axis {text!r} is not of the form key=v1,v2 "
                          "(e.g. --axis model.normalization=batch,layer,none)")
    values, depth, current = [], 0, ""
    for char in rest:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    try:
        parsed = [yaml.safe_load(v) if key != OVERLAY else v.strip() for v in values]
    except yaml.YAMLError:
        raise RecipeError(f"command line: --axis {key}: a value is not valid YAML") from None
    return key.strip(), parsed


def overlay_overrides(name: str) -> dict[str, Any]:
    """The settings of `recipes/overlays/<kind>/<name>.yaml` as dotted overrides (`none`:
    nothing). Overlays sit one folder deeper than recipes, by the kind of data they fit, so
    that nothing that lists recipes (`zoo list recipes`, the make targets) takes them for one."""
    if name == "none":
        return {}
    folder = paths.recipes_dir() / "overlays"
    found = sorted(folder.glob(f"*/{name}.yaml"))
    if not found:
        known = sorted(p.stem for p in folder.glob("*/*.yaml"))
        raise RecipeError(f"command line: --axis overlay: no overlay {name!r} in {folder}; "
                          f"known: {', '.join(['none', *known])}")
    path = found[0]
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: an overlay is a mapping of recipe keys")
    return flatten(data)


def cells(axes: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, each as {recipe key: value}; the last axis varies
    fastest."""
    keys = [key for key, _ in axes]
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(values for _, values in axes))]


def cell_recipe(recipe: Recipe, cell: dict[str, Any], seed: int) -> Recipe:
    """The base recipe with one cell's values and `seed` applied; an `overlay` value stands for that
    overlay's settings (`overlay_overrides`).

    Raises:
        RecipeError: a value does not fit its key, or the overlay does not exist.
    """
    overrides: dict[str, Any] = {}
    for key, value in cell.items():
        overrides.update(overlay_overrides(value) if key == OVERLAY else {key: value})
    overrides["seed"] = seed
    return recipe.with_overrides(overrides)


def ablate(recipe: Recipe, axes: Sequence[tuple[str, list[Any]]], seeds: int = 3,
           workers: int | None = 1, pool: WorkerPool | None = None) -> str:
    """Train every cell of the grid for `seeds` seeds under one parent run; returns its id.

    Every cell's recipe is validated before anything trains, so a bad value fails at once.

    Args:
        recipe: the base recipe.
        axes: (recipe key, values) pairs; the grid is every combination.
        seeds: seeds per cell: `recipe.seed`, `recipe.seed + 1`, ...
        workers: 1 trains in this process, N > 1 in N worker processes (`zoo.workers`),
            None one per core; at most one per cell and seed left to train. A run's result
            depends on its cell and seed only, not on the worker that trains it.
        pool: worker processes started before (`zoo.workers.WorkerPool`); None starts them
            when the jobs are known.
    """
    if seeds < 1:
        raise ArgumentError(f"ablate: --seeds must be at least 1 (received {seeds})")
    check_workers(workers, "ablate")
    grid = cells(axes)
    seed_list = [recipe.seed + s for s in range(seeds)]
    jobs = [(cell, seed, cell_recipe(recipe, cell, seed)) for cell in grid for seed in seed_list]
    key = hashlib.sha256(json.dumps(
        [recipe.fingerprint, [[k, v] for k, v in axes], seed_list], sort_keys=True,
        default=str).encode()).hexdigest()[:16]
    experiment = layout.experiment_for(recipe.data.dataset)
    existing = _find_parent(experiment, key)
    tags = {layout.RECIPE: recipe.name, layout.ABLATION_KEY: key,
            layout.ABLATION_AXES: json.dumps([[k, v] for k, v in axes], default=str)}
    with tracking.start_run(experiment, f"ablate {recipe.name}", tags,
                            resume_run_id=existing) as parent:
        done = _finished_cells(parent.run_id)
        total, started = len(jobs), time.monotonic()
        print(f"zoo: ablation of {recipe.name}: {len(grid)} cells x {seeds} seeds = {total} "
              f"runs under parent {parent.run_id}", flush=True)
        pending, counted = [], 0
        for cell, seed, cell_r in jobs:
            label = f"{describe_values(cell)} seed={seed}"
            if (cell_r.fingerprint, str(seed)) in done:
                counted += 1
                print(f"[{counted}/{total}] {label}: finished before, skipped", flush=True)
                continue
            pending.append(Job(cell_r, label, run_name=label, parent_run_id=parent.run_id,
                               tags={layout.CELL: json.dumps(cell, default=str)}))
        skipped = counted
        count = pick_workers(workers, len(pending), "ablate")

        def finished(index: int, result: JobResult) -> None:
            nonlocal counted
            counted += 1
            trained = counted - skipped
            elapsed = time.monotonic() - started
            remaining = elapsed / trained * (len(pending) - trained)
            print(f"[{counted}/{total}] {pending[index].label}: test_accuracy "
                  f"{result.test_accuracy:.4f}  elapsed {elapsed:.0f} s  "
                  f"remaining ~{remaining:.0f} s", flush=True)

        run_jobs(pending, count, name=f"ablate {recipe.name}", on_done=finished, pool=pool)
        parent.log_metrics({"cells": len(grid), "runs": total, "skipped": skipped})
        return parent.run_id


def _find_parent(experiment: str, key: str) -> str | None:
    client = tracking.client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.`{layout.ABLATION_KEY}` = '{key}'")
    return runs[0].info.run_id if runs else None


def _finished_cells(parent_run_id: str) -> set[tuple[str, str]]:
    runs = tracking.child_runs(tracking.client(), parent_run_id)
    return {(r.data.tags.get(layout.FINGERPRINT), r.data.tags.get(layout.SEED))
            for r in runs if r.info.status == "FINISHED"}
