"""Comparisons: grouping by fingerprint, diff-only columns, statistics against hand-computed
values and scipy, undefined statistics (n<2, no variance), Benjamini-Hochberg, errors for unknown
runs, and the ablation grid with its resume."""

from __future__ import annotations

import math
import warnings

import pytest
from scipy import stats

from zoo import mlflow_layout
from zoo.errors import RecipeError, ZooError
from zoo.recipe import load_recipe
from zoo.workflows.ablate import ablate, cells, parse_axis
from zoo.workflows.compare import (
    FEW_RUNS,
    NO_VARIANCE,
    Group,
    RunRecord,
    bh_adjust,
    compare,
    comparison_table,
    differing_keys,
    group_runs,
    load_runs,
    mean_std,
    welch,
)


def record(run_id, fingerprint, acc, **params):
    base = {"name": "x", "seed": "0", "model.dropout": "0.0", "model.normalization": "batch",
            "optimizer.learning_rate": "0.001"}
    return RunRecord(run_id, fingerprint, {**base, **params},
                     {"test_accuracy": acc, "accuracy": acc + 0.05, "val_accuracy": acc})


RUNS_A = [0.90, 0.92, 0.91]
RUNS = [
    record("a1", "A", 0.90, seed="0"),
    record("b1", "B", 0.80, seed="0", **{"model.dropout": "0.3"}),
    record("a2", "A", 0.92, seed="1"),
    record("b2", "B", 0.84, seed="1", **{"model.dropout": "0.3"}),
    record("a3", "A", 0.91, seed="2"),
    record("b3", "B", 0.82, seed="2", **{"model.dropout": "0.3"}),
]


def test_runs_group_by_fingerprint_in_order():
    groups = group_runs(RUNS)
    assert [g.fingerprint for g in groups] == ["A", "B"]
    assert [[r.run_id for r in g.runs] for g in groups] == [["a1", "a2", "a3"],
                                                            ["b1", "b2", "b3"]]


def test_only_differing_keys_become_columns():
    groups = group_runs(RUNS)
    assert differing_keys(groups) == ["model.dropout"]  # seed and name never count
    table = comparison_table(groups)
    assert table.columns[0] == "dropout"
    assert "normalization" not in table.columns and "seed" not in table.columns


def test_statistics_match_hand_computed_values():
    a, b = [0.90, 0.92, 0.91], [0.80, 0.84, 0.82]
    assert mean_std(a) == pytest.approx((0.91, 0.01))
    d = welch(b, a)
    # means 0.82 - 0.91; variances 4e-4 and 1e-4; se = sqrt(4e-4/3 + 1e-4/3) = 0.012910
    se = math.sqrt(4e-4 / 3 + 1e-4 / 3)
    assert d.mean == pytest.approx(-0.09)
    dof = (4e-4 / 3 + 1e-4 / 3) ** 2 / ((4e-4 / 3) ** 2 / 2 + (1e-4 / 3) ** 2 / 2)
    assert dof == pytest.approx(2.9412, rel=1e-3)
    t = -0.09 / se  # -6.971
    assert t == pytest.approx(-6.9714, rel=1e-3)
    # t distribution with 2.94 dof: two-sided p for |t| = 6.97
    assert d.p_value == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert d.p_value < 0.01
    half = stats.t.ppf(0.975, dof) * se
    assert (d.low, d.high) == pytest.approx((-0.09 - half, -0.09 + half))
    assert d.reason == ""


def test_welch_with_unequal_sizes_matches_hand_formulas():
    # Unequal n and variances, where Welch and the pooled (Student) test disagree.
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 10.0]
    # means 2.5 and 6; variances 5/3 and 13; squared standard errors 5/12 and 13/3
    va, vb = (5 / 3) / 4, 13 / 3
    se = math.sqrt(va + vb)  # sqrt(4.75)
    t = (2.5 - 6) / se
    dof = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    assert (t, dof) == pytest.approx((-1.60591, 2.38843), rel=1e-4)
    d = welch(a, b)
    assert d.mean == pytest.approx(-3.5)
    assert d.p_value == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)
    half = stats.t.ppf(0.975, dof) * se
    assert (d.low, d.high) == pytest.approx((-3.5 - half, -3.5 + half), rel=1e-9)
    # the pooled-variance test gives another answer: the check above tells them apart
    assert d.p_value != pytest.approx(stats.ttest_ind(a, b).pvalue, rel=1e-3)


def test_welch_matches_scipy():
    a, b = [0.71, 0.74, 0.69, 0.73, 0.70], [0.75, 0.78, 0.74]
    expected = stats.ttest_ind(a, b, equal_var=False)
    interval = expected.confidence_interval(0.95)
    d = welch(a, b)
    assert (d.p_value, d.low, d.high) == pytest.approx(
        (expected.pvalue, interval.low, interval.high), rel=1e-12)


def test_zero_variance_has_no_p_value_nor_interval():
    differ = welch([0.9, 0.9, 0.9], [0.8, 0.8, 0.8])
    assert differ.reason == NO_VARIANCE and differ.mean == pytest.approx(0.1)
    assert math.isnan(differ.p_value) and math.isnan(differ.low) and math.isnan(differ.high)
    same = welch([0.9, 0.9, 0.9], [0.9, 0.9, 0.9])
    assert same.reason == NO_VARIANCE and same.mean == 0 and math.isnan(same.p_value)
    # float round-off is no variance either: scipy would report p ~ 1e-233 here
    noise = welch([0.5, 0.5 + 1e-16, 0.5, 0.5 + 1e-16], [0.9, 0.9 + 1e-16, 0.9 + 1e-16, 0.9])
    assert noise.reason == NO_VARIANCE and math.isnan(noise.p_value)


def test_one_constant_group_still_has_a_p_value_without_warnings():
    a, b = [0.9, 0.9, 0.9], [0.80, 0.84, 0.82]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warning is expected to be muted
        d = welch(b, a)
    assert d.reason == ""
    # only b's spread counts: se = sqrt(4e-4 / 3), dof = n_b - 1 = 2
    t = -0.08 / math.sqrt(4e-4 / 3)
    assert d.p_value == pytest.approx(2 * stats.t.sf(abs(t), 2))


def test_zero_variance_table_cells_say_why_and_print_no_zero():
    runs = [record(f"{f}{s}", f, acc, seed=str(s), **{"model.dropout": drop})
            for s in range(3) for f, acc, drop in (("A", 0.9, "0.0"), ("B", 0.8, "0.3"),
                                                    ("C", 0.9, "0.5"))]
    table = comparison_table(group_runs(runs))
    _, b, c = (dict(zip(table.columns, row, strict=True)) for row in table.rows)
    for row, delta in ((b, "-0.1000"), (c, "+0.0000")):
        assert row["Δ test_accuracy vs row 1"] == delta  # the difference of means stays
        assert row["95% CI"] == row["p"] == row["p (BH)"] == NO_VARIANCE


def test_p_value_underflow_is_not_printed_as_zero():
    # 50 seeds a tiny but real spread apart: the true p is below the smallest float
    runs = [record(f"{f}{s}", f, acc + s * 1e-9, seed=str(s), **{"model.dropout": f})
            for s in range(50) for f, acc in (("A", 0.5), ("B", 0.9))]
    groups = group_runs(runs)
    assert welch(groups[1].values("test_accuracy"), groups[0].values("test_accuracy")).p_value == 0
    table = comparison_table(groups)
    row = dict(zip(table.columns, table.rows[1], strict=True))
    assert row["p"] == row["p (BH)"] == "<5e-324"


def test_single_seed_has_no_interval():
    d = welch([0.9], [0.8, 0.85])
    assert d.mean == pytest.approx(0.075) and math.isnan(d.p_value) and math.isnan(d.low)
    assert d.reason == FEW_RUNS
    assert welch([0.8, 0.85], [0.9]).reason == FEW_RUNS
    assert isinstance(group_runs(RUNS[:1])[0], Group)
    table = comparison_table(group_runs([*RUNS, record("c1", "C", 0.85, **{"model.dropout":
                                                                              "0.5"})]))
    single = dict(zip(table.columns, table.rows[-1], strict=True))
    assert single["n"] == "1" and single["Δ test_accuracy vs row 1"] == "-0.0600"
    assert single["95% CI"] == single["p"] == single["p (BH)"] == FEW_RUNS


def hand_bh(ps):
    """Benjamini-Hochberg by its definition: sort ascending, p_(i) * m / i, running minimum from
    the largest down, capped at 1; back in the original order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, ps[i] * m / rank)
        adjusted[i] = running
    return adjusted


def test_bh_adjustment_matches_hand_computation():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.045, 0.04 -> running minimum 0.03, 0.04, 0.04
    assert bh_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert hand_bh([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    # an undefined p is no test: it stays NaN and m stays 3
    adjusted = bh_adjust([0.01, math.nan, 0.04, 0.03])
    assert math.isnan(adjusted[1])
    assert [adjusted[0], *adjusted[2:]] == pytest.approx([0.03, 0.04, 0.04])
    assert bh_adjust([0.2]) == pytest.approx([0.2])
    assert bh_adjust([math.nan]) == [pytest.approx(math.nan, nan_ok=True)]


def test_table_bh_column_over_rows_with_a_p_value():
    cells = {"B": [0.80, 0.84, 0.82], "C": [0.88, 0.89, 0.885], "D": [0.88, 0.895, 0.885]}
    runs = [record(f"a{s}", "A", acc, seed=str(s)) for s, acc in enumerate(RUNS_A)]
    runs += [record(f"{f.lower()}{s}", f, acc, seed=str(s), **{"model.dropout": f})
             for f, accs in cells.items() for s, acc in enumerate(accs)]
    runs.append(record("e0", "E", 0.85, **{"model.dropout": "E"}))  # one seed: excluded
    table = comparison_table(group_runs(runs))
    rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert rows[0]["p (BH)"] == "" and rows[-1]["p (BH)"] == FEW_RUNS
    ps = [welch(accs, RUNS_A).p_value for accs in cells.values()]
    expected = hand_bh(ps)
    # the running minimum matters for these p-values: C's p * 3 / 2 exceeds D's p * 3 / 3
    assert expected[1] < ps[1] * 3 / 2
    assert [r["p"] for r in rows[1:4]] == [f"{p:.3g}" for p in ps]
    assert [r["p (BH)"] for r in rows[1:4]] == [f"{p:.3g}" for p in expected]


def test_table_rows_hold_mean_std_gap_and_difference():
    table = comparison_table(group_runs(RUNS))
    header = table.columns
    first, second = (dict(zip(header, row, strict=True)) for row in table.rows)
    assert first["test_accuracy"] == "0.9100 ± 0.0100"
    assert first["n"] == "3"
    assert first["train-val gap"] == "0.0500 ± 0.0000"
    assert first["Δ test_accuracy vs row 1"] == "baseline"
    assert second["Δ test_accuracy vs row 1"] == "-0.0900"
    assert float(second["p"]) < 0.01
    assert second["p (BH)"] == second["p"]  # a single comparison: nothing to adjust
    assert table.markdown().splitlines()[1].startswith("|---")
    assert table.csv().splitlines()[0].startswith("dropout,")


def test_axis_parsing_and_grid():
    assert parse_axis("model.dropout=0,0.3") == ("model.dropout", [0, 0.3])
    assert parse_axis("model.widths=[8, 8],[16]") == ("model.widths", [[8, 8], [16]])
    assert parse_axis("overlay=aug_shift_noise,none") == ("overlay", ["aug_shift_noise", "none"])
    with pytest.raises(RecipeError, match="key=v1,v2"):
        parse_axis("model.dropout")
    grid = cells([("a", [1, 2]), ("b", ["x", "y", "z"])])
    assert len(grid) == 6 and grid[0] == {"a": 1, "b": "x"} and grid[-1] == {"a": 2, "b": "z"}


def test_ablate_runs_the_grid_once_and_resumes(mlflow_client, tmp_path):
    recipe = load_recipe("digits/mlp", ["model.widths=[8]", "training.epochs=1",
                                        "data.batch_size=128", "name=ablate-test"])
    axes = [("model.dropout", [0.0, 0.3]), ("model.normalization", ["none", "batch"])]
    parent = ablate(recipe, axes, seeds=2)
    children = mlflow_client.search_runs(
        [mlflow_client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)

    again = ablate(recipe, axes, seeds=2)  # nothing left to train
    assert again == parent
    assert mlflow_client.get_run(parent).data.metrics["skipped"] == 8
    assert len(mlflow_client.search_runs(
        [mlflow_client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'")) == 8

    table, files = compare(parent=parent, out_dir=tmp_path)
    assert table.columns[:2] == ["dropout", "normalization"]
    assert len(table.rows) == 4 and all(row[table.columns.index("n")] == "2"
                                        for row in table.rows)
    for kind in ("curves", "bars"):
        assert files[kind].read_bytes()[:4] == b"\x89PNG"


def test_overlay_axis(mlflow_store):
    from zoo.workflows.ablate import cell_recipe

    recipe = load_recipe("mnist1d/cnn_plain")
    with_overlay = cell_recipe(recipe, {"overlay": "aug_shift_noise"}, seed=0)
    assert [op.op for op in with_overlay.data.augmentation] == ["shift", "noise"]
    assert cell_recipe(recipe, {"overlay": "none"}, seed=0).data.augmentation == []
    with pytest.raises(RecipeError, match="no overlay 'nope'"):
        cell_recipe(recipe, {"overlay": "nope"}, seed=0)


def test_unknown_run_ids_are_one_line_errors(mlflow_store, capsys):
    from zoo import cli

    with pytest.raises(ZooError, match=r"no MLflow run 'deadbeef' in sqlite:///.*make ui"):
        load_runs(parent="deadbeef")
    with pytest.raises(ZooError, match="no MLflow run 'cafe0123'"):
        load_runs(run_ids=["cafe0123"])
    assert cli.main(["compare", "--parent", "deadbeef"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: no MLflow run 'deadbeef'") and err.count("\n") == 1


def test_parent_without_finished_children_names_the_parent(mlflow_client):
    from zoo import tracking

    experiment = tracking.ensure_experiment(mlflow_client, "compare-empty-parent")
    parent = mlflow_client.create_run(experiment).info.run_id
    with pytest.raises(ZooError, match=f"parent run '{parent}'.*found: no runs"):
        load_runs(parent=parent)
    child = mlflow_client.create_run(experiment, tags={mlflow_layout.PARENT: parent}).info.run_id
    mlflow_client.set_terminated(child, "FAILED")
    with pytest.raises(ZooError, match=f"parent run '{parent}'.*found: 1 FAILED"):
        load_runs(parent=parent)
