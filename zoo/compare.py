"""Side-by-side comparison of runs: configurations grouped over seeds, only the keys that differ,
mean ± std, and each configuration against a baseline with a 95% CI and a Welch t-test.

The statistics work on plain `RunRecord`s, so they are testable without MLflow; `load_runs`
fetches records from the store.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss")
# Keys that never distinguish configurations.
_IGNORED = ("name", "seed")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    fingerprint: str
    params: dict[str, str]
    metrics: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Group:
    """One configuration: the runs sharing a fingerprint (the same recipe but for its seed)."""

    fingerprint: str
    params: dict[str, str]
    runs: list[RunRecord]

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]

    def gaps(self) -> list[float]:
        """Train minus validation accuracy at the last epoch: how much the model overfits."""
        return [r.metrics["accuracy"] - r.metrics["val_accuracy"] for r in self.runs
                if "accuracy" in r.metrics and "val_accuracy" in r.metrics]


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float
    high: float
    p_value: float


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group by fingerprint, in order of first appearance."""
    groups: dict[str, Group] = {}
    for run in runs:
        if run.fingerprint not in groups:
            groups[run.fingerprint] = Group(run.fingerprint, run.params, [])
        groups[run.fingerprint].runs.append(run)
    return list(groups.values())


def differing_keys(groups: Sequence[Group]) -> list[str]:
    """The recipe keys whose values are not the same in every group, sorted (MLflow returns
    params in no fixed order)."""
    keys = sorted({k for g in groups for k in g.params})
    return [k for k in keys if not k.startswith(_IGNORED) and k.split(".")[0] not in _IGNORED
            and len({g.params.get(k) for g in groups}) > 1]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """mean(a) - mean(b) with a 95% confidence interval and the two-sided Welch t-test p-value.

    Both need at least two values; otherwise the interval and p-value are NaN.
    """
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t_crit = stats.t.ppf(0.975, dof)
    p = 2 * stats.t.sf(abs(diff / se), dof)
    return Difference(diff, diff - t_crit * se, diff + t_crit * se, float(p))


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
        return "\n".join([line(self.columns), line(["-" * w for w in widths]),
                          *map(line, self.rows)])

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in self.rows)])

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def comparison_table(groups: Sequence[Group], metric: str = "test_accuracy",
                     baseline: int = 0) -> Table:
    """One row per configuration: differing keys, each metric as mean ± std (n), the
    train-validation gap, and `metric` against the baseline row (difference, 95% CI, p)."""
    if not groups:
        raise ZooError("no finished runs to compare")
    keys = differing_keys(groups)
    metrics = [m for m in METRICS if any(g.values(m) for g in groups)]
    columns = [k.split(".", 1)[-1] if _unique_suffix(k, keys) else k for k in keys]
    columns += [*metrics, "n", "train-val gap", f"Δ {metric} vs row 1", "95% CI", "p"]
    base = groups[baseline].values(metric)
    rows = []
    for index, group in enumerate(groups):
        row = [group.params.get(k, "") for k in keys]
        row += [_mean_std_text(group.values(m)) for m in metrics]
        row += [str(len(group.runs)), _mean_std_text(group.gaps())]
        if index == baseline:
            row += ["baseline", "", ""]
        else:
            d = welch(group.values(metric), base)
            row += [f"{d.mean:+.4f}", _ci_text(d), "" if math.isnan(d.p_value)
                    else f"{d.p_value:.3g}"]
        rows.append(row)
    return Table(columns, rows)


def _unique_suffix(key: str, keys: Sequence[str]) -> bool:
    suffix = key.split(".", 1)[-1]
    return sum(k.split(".", 1)[-1] == suffix for k in keys) == 1


def _mean_std_text(values: Sequence[float]) -> str:
    if not values:
        return ""
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def _ci_text(d: Difference) -> str:
    return "" if math.isnan(d.low) else f"[{d.low:+.4f}, {d.high:+.4f}]"


# ---------------------------------------------------------------------------------------------
# MLflow


def load_runs(*, parent: str | None = None, experiment: str | None = None,
              run_ids: Sequence[str] = (), with_history: bool = False) -> list[RunRecord]:
    """FINISHED zoo runs: the children of `parent`, every run of `experiment`, or `run_ids`."""
    from zoo import tracking

    client = tracking.client()
    if run_ids:
        runs = [client.get_run(run_id) for run_id in run_ids]
    elif parent:
        runs = tracking.child_runs(client, parent)
    elif experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments()]
            raise ZooError(f"no experiment {experiment!r}; known: {', '.join(names)}")
        runs = client.search_runs([found.experiment_id], max_results=5000)
    else:
        raise ZooError("say which runs to compare: --parent RUN, --experiment NAME or --runs ID")
    records = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if run.info.status != "FINISHED" or "zoo.fingerprint" not in run.data.tags:
            continue
        history = {}
        if with_history:
            for key in ("val_accuracy", "val_loss", "accuracy", "loss"):
                points = client.get_metric_history(run.info.run_id, key)
                history[key] = [p.value for p in sorted(points, key=lambda p: p.step)]
        records.append(RunRecord(run.info.run_id, run.data.tags["zoo.fingerprint"],
                                 dict(run.data.params), dict(run.data.metrics), history))
    return records


def learning_curves_plot(groups: Sequence[Group], keys: Sequence[str], path: Path,
                         metric: str = "val_accuracy") -> Path:
    """Per configuration, the mean curve over seeds with a band of ± one std."""
    import numpy as np

    from zoo.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for group in groups:
        curves = [r.history.get(metric, []) for r in group.runs]
        length = min((len(c) for c in curves), default=0)
        if not length:
            continue
        values = np.array([c[:length] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0)
        epochs = np.arange(1, length + 1)
        ax.plot(epochs, mean, label=_label(group, keys))
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric}: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bar_plot(groups: Sequence[Group], keys: Sequence[str], path: Path,
             metric: str = "test_accuracy") -> Path:
    """The metric per configuration with error bars (± one std over seeds)."""
    from zoo.plots import pyplot

    plt = pyplot()
    stats_ = [mean_std(g.values(metric)) for g in groups]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) + 2), 4.2))
    ax.bar(range(len(groups)), [m for m, _ in stats_], yerr=[s for _, s in stats_], capsize=4)
    ax.set_xticks(range(len(groups)), [_label(g, keys, "\n") for g in groups], fontsize=7)
    low = min(m - s for m, s in stats_)
    ax.set_ylim(max(0.0, low - 0.05 * abs(low)), None)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _label(group: Group, keys: Sequence[str], sep: str = ", ") -> str:
    return sep.join(f"{k.split('.')[-1]}={group.params.get(k)}" for k in keys) or "all"


def compare(*, parent: str | None = None, experiment: str | None = None,
            run_ids: Sequence[str] = (), metric: str = "test_accuracy",
            out_dir: Path | None = None) -> tuple[Table, dict[str, Path]]:
    """Build the table and write Markdown, CSV and both plots (logged to `parent` if given)."""
    from zoo import paths, tracking

    groups = group_runs(load_runs(parent=parent, experiment=experiment, run_ids=run_ids,
                                  with_history=True))
    table = comparison_table(groups, metric)
    label = parent or experiment or "runs"
    folder = out_dir or paths.project_root() / "build" / "compare" / label.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    keys = differing_keys(groups)
    files = {
        "markdown": folder / "comparison.md",
        "csv": folder / "comparison.csv",
        "curves": learning_curves_plot(groups, keys, folder / "learning_curves.png"),
        "bars": bar_plot(groups, keys, folder / "bars.png", metric),
    }
    files["markdown"].write_text(table.markdown() + "\n")
    files["csv"].write_text(table.csv())
    if parent:
        client = tracking.client()
        for path in files.values():
            client.log_artifact(parent, str(path), "comparison")
        client.set_tag(parent, "zoo.comparison_columns", json.dumps(keys))
    return table, files


def describe_cell(values: dict[str, Any]) -> str:
    """`{"model.dropout": 0.3, "optimizer.learning_rate": 0.0012345}` ->
    `dropout=0.3 learning_rate=0.001235`: run names and progress lines."""
    return " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else
                    f"{k.split('.')[-1]}={v}" for k, v in values.items())
