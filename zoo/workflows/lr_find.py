"""Learning-rate range test (Smith 2015, "Cyclical Learning Rates"; the fastai `lr_find`).

From a fresh model, a short run of `steps` optimizer steps with the learning rate rising
exponentially from `start` to `end`, one rate per batch. While it runs, the batch losses are
tracked with a bias-corrected exponential moving average, and the run stops once that exceeds
4 times its lowest value (the loss diverges). Afterwards the losses are smoothed with a centered
moving average, which, unlike the running one, does not lag behind the rate (a running average
with fastai's weight of 0.98 trails by about 50 batches, two decades of rate here). The
suggested rate is where that smoothed loss falls fastest against log(rate), searched below the
rate of its lowest value: there the optimizer still improves quickly, with headroom before it
diverges. The rate of the lowest loss is reported too (the other classic pick is a tenth of it).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo import mlflow_layout as layout
from zoo import paths
from zoo.errors import ArgumentError
from zoo.recipe import Recipe

SMOOTHING = 0.98  # weight of the running average that decides when to stop, as fastai's
DIVERGE = 4.0  # stop once the running average exceeds 4x its lowest value


@dataclass
class LrFindResult:
    """What a range test measured and suggests."""

    recipe: Recipe
    learning_rates: list[float]
    losses: list[float]  # raw loss of each batch
    smoothed: list[float]  # centered moving average of the losses
    suggested: float | None  # steepest descent of the smoothed loss; None if it never fell
    min_loss_rate: float | None  # the rate at the lowest smoothed loss
    stopped_early: bool
    plot_path: Path | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def override(self) -> str | None:
        """The command-line override that uses the suggestion."""
        return None if self.suggested is None else (
            f"optimizer.learning_rate={self.suggested:.2g}")


def lr_find(recipe: Recipe, *, steps: int = 200, start: float = 1e-7, end: float = 10.0,
            track: bool = True, out: Path | None = None) -> LrFindResult:
    """Run the range test on a recipe's model, data and optimizer (its schedule replaced).

    Args:
        recipe: the recipe; its optimizer, loss, regularization, dropout and augmentation are
            used as they train.
        steps: optimizer steps of the whole sweep (fewer if the loss diverges).
        start, end: the first and last learning rates.
        track: record an MLflow run (per-step loss and rate, the suggestion, the plot).
        out: where the PNG goes; default `build/lr-find/<recipe>.png` in the project.

    Returns:
        The `LrFindResult`.

    Raises:
        ArgumentError: steps below 10, or a rate range that is not 0 < start < end.
    """
    if steps < 10:
        raise ArgumentError(f"lr-find: --steps must be at least 10 (received {steps})")
    if not 0 < start < end:
        raise ArgumentError(f"lr-find: need 0 < --start < --end (received start={start:g}, "
                            f"end={end:g})")
    from zoo.training.trainer import prepare

    # The sweep sets the rate itself: the recipe's schedule and warmup give way to a constant
    # rate, which Keras lets a caller set (a schedule object it does not).
    prepared = prepare(recipe.with_overrides({"optimizer.schedule": "constant",
                                              "optimizer.warmup_epochs": 0}))
    rates, losses, stopped = _sweep(prepared, steps, start, end)
    smoothed = centered_average(losses, window=max(5, steps // 15))
    suggested, min_loss_rate = suggest(rates, smoothed)
    result = LrFindResult(recipe, rates, losses, smoothed, suggested, min_loss_rate, stopped)
    if suggested is None:
        result.notes.append("the smoothed loss never fell: check the model and loss "
                            "(`zoo sanity`) or widen the range down with --start")
    out = Path(out) if out else paths.project_root() / "build" / "lr-find" / (
        re.sub(r"[^\w.-]", "_", recipe.name) + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.plot_path = plot(result, out)
    if track:
        _log(result, layout.experiment_for(prepared.splits.name))
    return result


def _sweep(prepared, steps: int, start: float, end: float):
    """Train `steps` batches with the rate rising exponentially; stop when the loss diverges."""
    model = prepared.model
    growth = (end / start) ** (1.0 / (steps - 1))
    rates, losses = [], []
    average, best, stopped = 0.0, math.inf, False
    batches = iter(prepared.train_data.repeat())
    for i in range(steps):
        rate = start * growth**i
        model.optimizer.learning_rate = rate
        model.reset_metrics()  # the reported loss is then this batch's alone
        x, y = next(batches)
        loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
        rates.append(rate)
        losses.append(loss)
        if not math.isfinite(loss):
            stopped = True
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        running = average / (1 - SMOOTHING ** (i + 1))
        best = min(best, running)
        if running > DIVERGE * best:
            stopped = True
            break
    return rates, losses, stopped


def centered_average(values: list[float], window: int) -> list[float]:
    """The mean over `window` neighbours centred on each point (fewer at the ends); a
    non-finite loss (the divergence) stays as it is."""
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    kernel = np.ones(window | 1)  # odd, so that it is centred
    sums = np.convolve(np.where(finite, data, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(np.float64), kernel, mode="same")
    smoothed = np.where(finite, sums / np.maximum(counts, 1), data)
    return [float(v) for v in smoothed]


def suggest(rates: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(steepest-descent rate, rate of the lowest smoothed loss).

    The slope is d(smoothed loss)/d(log10 rate), searched up to the lowest loss, skipping the
    first twentieth of the sweep, where the smoothing window is cut short by the start.
    """
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 5:
        return None, None
    values = np.asarray([smoothed[i] for i in finite])
    logs = np.log10(np.asarray([rates[i] for i in finite]))
    lowest = int(values.argmin())
    min_loss_rate = float(10 ** logs[lowest])
    skip = max(1, len(rates) // 20)
    if lowest <= skip + 1 or values[lowest] >= values[skip]:
        return None, min_loss_rate  # the loss never fell after the start-up
    slopes = np.gradient(values[:lowest + 1], logs[:lowest + 1])
    steepest = skip + int(slopes[skip:].argmin())
    return float(10 ** logs[steepest]), min_loss_rate


def plot(result: LrFindResult, path: Path) -> Path:
    """Loss against learning rate (log axis), the suggestion and the lowest loss marked."""
    from zoo.plots import lr_range_test

    return lr_range_test(
        result.learning_rates, result.losses, result.smoothed, path,
        suggested=result.suggested, min_loss_rate=result.min_loss_rate,
        title=f"{result.recipe.name}: learning-rate range test "
              f"({result.recipe.optimizer.name}, {len(result.learning_rates)} steps)")


def _log(result: LrFindResult, experiment: str) -> None:
    """One MLflow run: per-step loss and rate, the suggestion, the plot.

    It carries no `zoo.fingerprint` tag, so comparisons and ablations never take it for a
    training run.
    """
    from zoo import tracking

    recipe = result.recipe
    tags = {layout.RECIPE: recipe.name, layout.KIND: "lr-find", layout.SEED: recipe.seed,
            **tracking.environment_tags()}
    with tracking.start_run(experiment, f"{recipe.name} lr-find", tags) as run:
        run.log_params(recipe.flat())
        for step, (rate, loss, smooth) in enumerate(zip(
                result.learning_rates, result.losses, result.smoothed, strict=True)):
            values = {"lr_find/learning_rate": rate, "lr_find/loss": loss,
                      "lr_find/smoothed_loss": smooth}
            run.log_epoch({k: v for k, v in values.items() if math.isfinite(v)}, step)
        final = {}
        if result.suggested is not None:
            final["suggested_learning_rate"] = result.suggested
        if result.min_loss_rate is not None:
            final["min_loss_learning_rate"] = result.min_loss_rate
        if final:
            run.log_metrics(final)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "lr_find.png"
            copy.write_bytes(result.plot_path.read_bytes())
            run.log_artifact(copy)
        result.run_id = run.run_id
