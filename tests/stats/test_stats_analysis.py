"""analyze(): determinism, the JSON layout, Holm across strategies, the verdict and the rule."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from esper_ab.errors import ConfigError, DataError
from esper_ab.stats import (
    NO_WINNER,
    Analysis,
    SelectionRule,
    SimulationDesign,
    StrategySpec,
    analyze,
    select_winner,
    simulate_decisions,
)

BPS = ("attention", "conv_light", "depthwise", "norm")


def _sweep(strategies, *, n_replicates=40, seeds_per_cell=5, seed=0) -> pd.DataFrame:
    design = SimulationDesign(blueprints=BPS, strategies=tuple(strategies),
                              n_replicates=n_replicates, seeds_per_cell=seeds_per_cell,
                              replicate_correlation=0.3)
    return simulate_decisions(design, seed=seed)


@pytest.fixture(scope="module")
def planted() -> Analysis:
    df = _sweep([StrategySpec("baseline", (0.1, 0.3, 0.7, 0.9), signal=0.2),
                 StrategySpec("good", (0.5,) * 4, signal=0.8),
                 StrategySpec("meh", (0.5,) * 4, signal=0.3)])
    return analyze(df, n_boot=300, n_perm=500, seed=1)


def test_planted_best_strategy_wins_with_numbers_in_the_reason(planted):
    v = planted.verdict
    assert v.winner == "good"
    ba = planted.metrics.overall["balanced_accuracy"]
    assert f"{ba['good']:.3f}" in v.reason and f"{ba['baseline']:.3f}" in v.reason
    assert "Holm-adjusted p" in v.reason and "equalized_odds_gap" in v.reason


def test_baseline_in_disguise_gives_no_winner():
    spec = StrategySpec("baseline", (0.1, 0.3, 0.7, 0.9), signal=0.3)
    df = _sweep([spec, dataclasses.replace(spec, name="twin_a"),
                 dataclasses.replace(spec, name="twin_b")], n_replicates=20, seeds_per_cell=2)
    a = analyze(df, n_boot=100, n_perm=500)
    assert a.verdict.winner is None
    assert a.verdict.reason.startswith(NO_WINNER)
    assert "twin_a" in a.verdict.reason and "twin_b" in a.verdict.reason


def test_only_the_baseline_gives_no_winner():
    a = analyze(_sweep([StrategySpec("baseline", (0.5,) * 4)], n_replicates=5, seeds_per_cell=1),
                n_boot=20, n_perm=20)
    assert a.verdict.winner is None and "no other strategy" in a.verdict.reason


def test_rule_is_configurable_and_re_decided_without_recomputing(planted):
    # "good" is fair by construction, so its debiased gap may be exactly 0 and pass even a
    # bound of 0 on the estimate; the upper CI limit of the gap is positive and cannot, and
    # a lower limit of 0 does not show it unfair either: its fairness is undetermined.
    strict = select_winner(planted, rule=SelectionRule(max_gap=0.0, gap_bound="ci_high"))
    assert strict.winner is None and strict.kind == "undecided"
    assert "fairness undetermined" in strict.reason and "straddles the bound 0" in strict.reason
    # Seed minimums re-decide with the fairness criterion recomputed: 40 replicates x 5 seeds
    # hold about 100 valuable seeds per blueprint, fewer than 150.
    few = select_winner(planted, rule=SelectionRule(min_valuable=150, min_non_valuable=150))
    assert few.winner is None and set(few.left_out) == set(BPS)
    assert "valuable seed(s) < min_valuable 150" in few.left_out["norm"]
    # Every defined rate enters: without the TPR of any blueprint, FPR parity still judges.
    fpr_only = select_winner(planted, rule=SelectionRule(min_valuable=150))
    assert fpr_only.winner == "good" and fpr_only.left_out == {}
    assert set(fpr_only.rates_entered.values()) == {("fpr",)}
    assert "cannot be computed" in few.reason
    by_mcc = select_winner(planted, rule=SelectionRule(objective="mcc"))
    assert by_mcc.winner == "good"
    no_sig = select_winner(planted, rule=SelectionRule(require_significance=False, max_gap=1.0))
    assert no_sig.winner == "good"
    with pytest.raises(ConfigError, match="objective"):
        SelectionRule(objective="accuracy")
    with pytest.raises(ConfigError, match="max_gap"):
        SelectionRule(max_gap=-0.1)


def test_holm_across_strategies_and_raw_pvalues_are_reported(planted):
    tests = [t for t in planted.tests if t.name == "balanced_accuracy_vs_baseline"]
    assert [t.strategy for t in tests] == ["good", "meh"]
    raw = [t.pvalue for t in tests]
    np.testing.assert_allclose([t.pvalue_adjusted for t in tests],
                               multipletests(raw, method="holm")[1])
    bp = [t for t in planted.tests if t.name == "blueprint_pass_mcnemar"]
    np.testing.assert_allclose([t.pvalue_adjusted for t in bp],
                               multipletests([t.pvalue for t in bp], method="fdr_bh")[1])


def test_json_layout_holds_the_required_fields(planted):
    d = planted.to_dict()
    text = json.dumps(d, allow_nan=False)  # strictly valid JSON: NaN became null
    assert json.loads(text)["verdict"]["winner"] == "good"
    row = d["per_blueprint"]["good"]["norm"]
    for key in ("n", "pass_rate", "tpr", "fpr", "precision", "median_pass_epoch", "auc",
                "auc_ci_low", "auc_ci_high", "spearman_rho", "spearman_pvalue"):
        assert key in row
    gaps = d["disparities"]["baseline"]
    for key in ("pass_rate_gap", "pass_rate_ratio", "equal_opportunity_gap", "equalized_odds_gap"):
        assert set(gaps[key]) == {"estimate", "ci_low", "ci_high"}
        assert gaps[key]["ci_low"] <= gaps[key]["ci_high"]
    for t in d["tests"]:
        assert {"name", "strategy", "blueprint", "statistic", "pvalue", "pvalue_adjusted"} <= set(t)
    assert {"winner", "reason"} <= set(d["verdict"])
    assert d["overall"]["good"]["balanced_accuracy"] == pytest.approx(
        planted.metrics.overall.loc["good", "balanced_accuracy"])


def test_format_table_has_every_section(planted):
    text = planted.format_table()
    for needle in ("Per blueprint", "Overall", "Disparities", "Fairness criterion",
                   "Matched comparison", "Tests", "Verdict (winner): good"):
        assert needle in text
    # The answer comes first: the verdict's headline is the first line.
    assert text.splitlines()[0].startswith("Verdict: winner good: balanced_accuracy")
    assert text.splitlines()[0] == planted.verdict.headline


def test_deterministic_given_the_seed():
    df = _sweep([StrategySpec("baseline", (0.2, 0.4, 0.6, 0.8), 0.3),
                 StrategySpec("x", (0.5,) * 4, 0.5)], n_replicates=15, seeds_per_cell=2)
    a = analyze(df, n_boot=100, n_perm=200, seed=3)
    b = analyze(df.sample(frac=1.0, random_state=1), n_boot=100, n_perm=200, seed=3)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())  # row order does not matter
    c = analyze(df, n_boot=100, n_perm=200, seed=4)
    assert json.dumps(a.to_dict()) != json.dumps(c.to_dict())


def test_bad_options_and_missing_baseline_are_clear_errors(planted):
    df = _sweep([StrategySpec("sqrt", (0.5,) * 4)], n_replicates=3, seeds_per_cell=1)
    with pytest.raises(DataError, match="baseline strategy 'baseline' is not in the table.*sqrt"):
        analyze(df)
    assert analyze(df, baseline="sqrt", n_boot=10, n_perm=10).baseline == "sqrt"
    with pytest.raises(ConfigError, match="alpha"):
        analyze(df, baseline="sqrt", alpha=1.5)
    with pytest.raises(ConfigError, match="n_perm"):
        analyze(df, baseline="sqrt", n_perm=0)
    with pytest.raises(DataError, match="test names"):
        planted.find_test("nope")
    t = planted.find_test("correctness_mcnemar", strategy="good")
    assert t.pvalue_adjusted is not None and t.adjustment == "holm"


def test_edge_tables_give_undefined_results_not_crashes():
    spec = [StrategySpec("baseline", (0.3, 0.6, 0.5, 0.5), 0.3), StrategySpec("x", (0.5,) * 4, 0.5)]
    df = _sweep(spec, n_replicates=6, seeds_per_cell=1)
    # x judged on other replicates only: no pairing, so no paired p-value (NaN, not 1).
    moved = df.assign(replicate=np.where(df.strategy == "x", df.replicate + 100, df.replicate))
    a = analyze(moved, n_boot=20, n_perm=16)
    t = a.find_test("balanced_accuracy_vs_baseline", strategy="x")
    assert np.isnan(t.pvalue) and "no replicate" in t.method
    assert a.verdict.winner is None
    json.dumps(a.to_dict(), allow_nan=False)
    # A strategy whose statistic is never measured: AUC/Spearman undefined, seeds never pass.
    unmeasured = df.assign(statistic=np.where(df.strategy == "x", np.nan, df.statistic),
                           passed=np.where(df.strategy == "x", False, df.passed))
    b = analyze(unmeasured, n_boot=20, n_perm=16)
    assert b.metrics.by_group.loc["x", "n_unmeasured"].eq(6).all()
    assert b.metrics.by_group.loc["x", "auc"].isna().all()
    assert np.isposinf(b.matched.thresholds["x"])
