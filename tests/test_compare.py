"""Comparisons: grouping by fingerprint, diff-only columns, statistics against hand-computed
values, and the ablation grid with its resume."""

from __future__ import annotations

import math

import pytest

from zoo.ablate import ablate, cells, parse_axis
from zoo.compare import (
    Group,
    RunRecord,
    compare,
    comparison_table,
    differing_keys,
    group_runs,
    mean_std,
    welch,
)
from zoo.errors import RecipeError
from zoo.recipe import load_recipe


def record(run_id, fingerprint, acc, **params):
    base = {"name": "x", "seed": "0", "model.dropout": "0.0", "model.normalization": "batch",
            "optimizer.learning_rate": "0.001"}
    return RunRecord(run_id, fingerprint, {**base, **params},
                     {"test_accuracy": acc, "accuracy": acc + 0.05, "val_accuracy": acc})


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
    # t distribution with 2.94 dof: two-sided p for |t| = 6.97 (scipy.stats.ttest_ind agrees)
    from scipy import stats

    expected = stats.ttest_ind(b, a, equal_var=False)
    assert d.p_value == pytest.approx(expected.pvalue)
    assert d.p_value < 0.01
    half = stats.t.ppf(0.975, dof) * se
    assert (d.low, d.high) == pytest.approx((-0.09 - half, -0.09 + half))


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
    assert table.markdown().splitlines()[1].startswith("|---")
    assert table.csv().splitlines()[0].startswith("dropout,")


def test_single_seed_has_no_interval():
    d = welch([0.9], [0.8, 0.85])
    assert d.mean == pytest.approx(0.075) and math.isnan(d.p_value)
    assert isinstance(group_runs(RUNS[:1])[0], Group)


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
    from zoo.ablate import cell_recipe

    recipe = load_recipe("mnist1d/cnn_plain")
    with_overlay = cell_recipe(recipe, {"overlay": "aug_shift_noise"}, seed=0)
    assert [op.op for op in with_overlay.data.augmentation] == ["shift", "noise"]
    assert cell_recipe(recipe, {"overlay": "none"}, seed=0).data.augmentation == []
    with pytest.raises(RecipeError, match="no overlay 'nope'"):
        cell_recipe(recipe, {"overlay": "nope"}, seed=0)
