"""Side-by-side comparison of runs: configurations grouped over seeds, only the keys that differ,
mean ± std, and each configuration against a baseline with a 95% CI, a Welch t-test and
Benjamini-Hochberg adjusted p-values.

The statistics come from `scipy.stats` and work on plain `RunRecord`s, so they are testable
without MLflow; `load_runs` fetches records from the store. Where a p-value or interval is
undefined (fewer than two runs, no variance) the table says why instead of printing a number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zoo import mlflow_layout as layout
from zoo.errors import ZooError

METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss")
# Keys that never distinguish configurations.
_IGNORED = ("name", "seed")
# Why a comparison has no interval or p-value; short, as they stand in the table's cells.
FEW_RUNS = "n<2"  # a sample variance needs two runs
NO_VARIANCE = "no variance"  # every run of both configurations scored the same
UNDEFINED = "undefined"  # scipy found no p-value for another reason (e.g. NaN metrics)


@dataclass(frozen=True)
class RunRecord:
    """One finished zoo run as the statistics see it: its configuration's fingerprint, params, final
    metrics and, when loaded `with_history`, each metric's values per epoch."""

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
        """The final `metric` of each run that logged it."""
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]

    def gaps(self) -> list[float]:
        """Train minus validation accuracy at the last epoch: how much the model overfits."""
        return [r.metrics["accuracy"] - r.metrics["val_accuracy"] for r in self.runs
                if "accuracy" in r.metrics and "val_accuracy" in r.metrics]


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its 95% confidence interval and two-sided Welch p-value.

    Attributes:
        mean: the difference of means; NaN only when a sample is empty.
        low: lower end of the interval; NaN when undefined.
        high: upper end of the interval; NaN when undefined.
        p_value: NaN when undefined.
        reason: why the interval and p-value are undefined (`FEW_RUNS`, `NO_VARIANCE`,
            `UNDEFINED`); empty when they are defined.
    """

    mean: float
    low: float = math.nan
    high: float = math.nan
    p_value: float = math.nan
    reason: str = ""


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
    """mean(a) - mean(b) with a 95% confidence interval and the two-sided Welch t-test p-value,
    from `scipy.stats.ttest_ind(a, b, equal_var=False)`.

    The interval and p-value are left undefined (NaN, with `reason` set) when:

    - either sample has fewer than two values: there is no variance to estimate (`FEW_RUNS`);
    - both samples are constant (up to float round-off): the standard error is 0, and scipy
      then answers p = 0 with an interval of width 0 when the means differ (NaN when they
      agree), which would read as certainty drawn from no evidence of the spread over seeds
      (`NO_VARIANCE`).

    The difference of means is kept in both cases.
    """
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, reason=FEW_RUNS)
    if _constant(a) and _constant(b):
        return Difference(diff, reason=NO_VARIANCE)
    with warnings.catch_warnings():
        if _constant(a) or _constant(b):
            # scipy warns of precision loss when a sample's values are (nearly) all equal; its
            # variance is then (about) 0 and the other sample's variance carries the test.
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
        interval = result.confidence_interval(0.95)
    if not math.isfinite(result.pvalue):
        return Difference(diff, reason=UNDEFINED)
    return Difference(diff, float(interval.low), float(interval.high), float(result.pvalue))


def _constant(values: Sequence[float]) -> bool:
    # Equal up to float64 round-off: far below the resolution of Keras' float32 metrics, so any
    # spread a metric can really have counts as variance, while round-off alone (which scipy
    # would turn into a huge t and a tiny p, with a precision-loss warning) does not.
    return math.isclose(min(values), max(values), rel_tol=1e-12)


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (`scipy.stats.false_discovery_control`).

    NaN entries (undefined p-values) are left out of the family and stay NaN: they are no test,
    so they must not count towards the number of tests m.
    """
    from scipy import stats

    defined = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    if defined:
        values = stats.false_discovery_control([p_values[i] for i in defined], method="bh")
        for i, value in zip(defined, values, strict=True):
            adjusted[i] = float(value)
    return adjusted


@dataclass
class Table:
    """A comparison table as text cells, printed as aligned text, Markdown or CSV."""

    columns: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        """Aligned columns for the terminal, a rule under the header."""
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
        return "\n".join([line(self.columns), line(["-" * w for w in widths]),
                          *map(line, self.rows)])

    def markdown(self) -> str:
        """A Markdown table."""
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in self.rows)])

    def csv(self) -> str:
        """CSV text, the header row first."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def comparison_table(groups: Sequence[Group], metric: str = "test_accuracy",
                     baseline: int = 0) -> Table:
    """One row per configuration: differing keys, each metric as mean ± std (n), the
    train-validation gap, and `metric` against the baseline row: difference, 95% CI, Welch p and
    the Benjamini-Hochberg adjusted p over all rows compared with the baseline.

    Where the interval and p-values are undefined their cells hold the reason (`welch`).
    """
    if not groups:
        raise ZooError("no finished runs to compare")
    keys = differing_keys(groups)
    metrics = [m for m in METRICS if any(g.values(m) for g in groups)]
    columns = [k.split(".", 1)[-1] if _unique_suffix(k, keys) else k for k in keys]
    # "p (BH)" is always there, even with a single compared row (where it equals p): the CSV
    # keeps the same columns whatever the number of configurations.
    columns += [*metrics, "n", "train-val gap", f"Δ {metric} vs row {baseline + 1}", "95% CI",
                "p", "p (BH)"]
    base = groups[baseline].values(metric)
    differences = {i: welch(g.values(metric), base) for i, g in enumerate(groups)
                   if i != baseline}
    # Several configurations against one baseline are several tests: the adjusted p-value
    # bounds the expected share of false discoveries among the rows called significant.
    adjusted = dict(zip(differences, bh_adjust([d.p_value for d in differences.values()]),
                        strict=True))
    rows = []
    for index, group in enumerate(groups):
        row = [group.params.get(k, "") for k in keys]
        row += [_mean_std_text(group.values(m)) for m in metrics]
        row += [str(len(group.runs)), _mean_std_text(group.gaps())]
        if index == baseline:
            row += ["baseline", "", "", ""]
        else:
            d = differences[index]
            row += ["" if math.isnan(d.mean) else f"{d.mean:+.4f}", _ci_text(d),
                    d.reason or _p_text(d.p_value), d.reason or _p_text(adjusted[index])]
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
    return d.reason or f"[{d.low:+.4f}, {d.high:+.4f}]"


def _p_text(p: float) -> str:
    # A p-value below the smallest float underflows to 0.0; "0" would claim certainty.
    return f"{p:.3g}" if p > 0 else f"<{math.ulp(0.0):.0e}"


# ---------------------------------------------------------------------------------------------
# MLflow


def load_runs(*, parent: str | None = None, experiment: str | None = None,
              run_ids: Sequence[str] = (), with_history: bool = False) -> list[RunRecord]:
    """FINISHED zoo runs: the children of `parent`, every run of `experiment`, or `run_ids`.

    Raises:
        ZooError: `parent` or one of `run_ids` is no run of the store, `experiment` does not
            exist, or none of the runs asked for is a finished zoo run.
    """
    from zoo import tracking

    client = tracking.client()
    if run_ids:
        runs = [_get_run(client, run_id) for run_id in run_ids]
        source = f"none of the runs {', '.join(run_ids)} is"
    elif parent:
        _get_run(client, parent)  # child_runs would fail on an unknown id with a traceback
        runs = tracking.child_runs(client, parent)
        source = f"parent run {parent!r} has no child run that is"
    elif experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments()]
            raise ZooError(f"no experiment {experiment!r}; known: {', '.join(names)}")
        runs = client.search_runs([found.experiment_id], max_results=5000)
        source = f"experiment {experiment!r} has no run that is"
    else:
        raise ZooError("say which runs to compare: --parent RUN, --experiment NAME or --runs ID")
    records = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if run.info.status != "FINISHED" or layout.FINGERPRINT not in run.data.tags:
            continue
        history = {}
        if with_history:
            for key in ("val_accuracy", "val_loss", "accuracy", "loss"):
                points = client.get_metric_history(run.info.run_id, key)
                history[key] = [p.value for p in sorted(points, key=lambda p: p.step)]
        records.append(RunRecord(run.info.run_id, run.data.tags[layout.FINGERPRINT],
                                 dict(run.data.params), dict(run.data.metrics), history))
    if not records:
        # Every FINISHED run here lacks the zoo's fingerprint tag: it was not logged by the zoo.
        statuses = Counter("FINISHED, not a zoo run" if run.info.status == "FINISHED"
                           else run.info.status for run in runs)
        found_text = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        raise ZooError(f"nothing to compare: {source} a finished zoo run "
                       f"(found: {found_text or 'no runs'})")
    return records


def _get_run(client, run_id: str):
    """`client.get_run`, with a one-line ZooError for an id the store does not know."""
    from zoo import tracking

    run = tracking.find_run(client, run_id)
    if run is None:
        raise ZooError(f"no MLflow run {run_id!r} in {tracking.tracking_uri()}; list runs with "
                       "`make ui` or use --experiment NAME")
    return run


def learning_curves_plot(groups: Sequence[Group], keys: Sequence[str], path: Path,
                         metric: str = "val_accuracy") -> Path:
    """Per configuration, the mean curve of `metric` over seeds with a band of ± one std."""
    from zoo.plots import mean_curves

    return mean_curves({_label(g, keys): [r.history.get(metric, []) for r in g.runs]
                        for g in groups}, path, metric)


def bar_plot(groups: Sequence[Group], keys: Sequence[str], path: Path,
             metric: str = "test_accuracy") -> Path:
    """`metric` per configuration with error bars (± one std over seeds)."""
    from zoo.plots import mean_bars

    return mean_bars({_label(g, keys, "\n"): mean_std(g.values(metric)) for g in groups},
                     path, metric)


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
        client.set_tag(parent, layout.COMPARISON_COLUMNS, json.dumps(keys))
    return table, files

