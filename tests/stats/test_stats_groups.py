"""GroupMetrics pinned to scikit-learn / scipy per group; disparities equal the core computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, roc_auc_score

from esper_ab.stats import (
    GroupMetrics,
    SimulationDesign,
    StrategySpec,
    equal_opportunity_gap,
    equalized_odds_gap,
    pass_rate_gap,
    pass_rate_ratio,
    simulate_decisions,
    validate_decisions,
)
from esper_ab.stats._auc import auc_with_bootstrap, pair_counts
from esper_ab.stats._counts import STRATEGY_METRICS, build_arrays, strategy_metrics


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    design = SimulationDesign(
        blueprints=("attention", "conv_light", "norm"),
        strategies=(StrategySpec("baseline", (0.2, 0.9, 0.5), signal=0.4),
                    StrategySpec("mean_abs", (0.5, 0.5, 0.6), signal=0.6)),
        n_replicates=12, seeds_per_cell=2, value_means=(0.3, -0.2, 0.0),
        unmeasured_rate=0.1)
    df = simulate_decisions(design, seed=3)
    # Ties in the statistic exercise the half-credit in the AUC.
    df["statistic"] = df["statistic"].round(1)
    return df


@pytest.fixture(scope="module")
def metrics(table) -> GroupMetrics:
    return GroupMetrics.from_decisions(table, n_boot=200, seed=1)


def test_group_rates_match_sklearn_and_hand_counts(table, metrics):
    for (s, b), g in table.groupby(["strategy", "blueprint"]):
        row = metrics.by_group.loc[(s, b)]
        y, p = g["valuable"].to_numpy(), g["passed"].to_numpy()
        assert row["n"] == len(g)
        assert row["pass_rate"] == pytest.approx(p.mean())
        assert row["tpr"] == pytest.approx(p[y].mean())
        assert row["fpr"] == pytest.approx(p[~y].mean())
        assert row["precision"] == pytest.approx(y[p].mean())
        assert row["n_unmeasured"] == g["statistic"].isna().sum()
        assert row["median_pass_epoch"] == pytest.approx(np.median(g.loc[g["passed"], "pass_epoch"]))
        assert row["realized_utility"] == pytest.approx(g.loc[g["passed"], "value"].sum())
        m = g["statistic"].notna()
        assert row["auc"] == pytest.approx(roc_auc_score(y[m], g.loc[m, "statistic"]))
        rho, _ = sps.spearmanr(g.loc[m, "statistic"], g.loc[m, "value"])
        assert row["spearman_rho_seeds"] == pytest.approx(rho)  # descriptive
        # Two seeds per replicate: rho and its p-value both on per-replicate mean ranks.
        gm = g[m].assign(rs=sps.rankdata(g.loc[m, "statistic"]), rv=sps.rankdata(g.loc[m, "value"]))
        per_rep = gm.groupby("replicate")[["rs", "rv"]].mean()
        ref = sps.spearmanr(per_rep.rs, per_rep.rv)
        assert row["spearman_rho"] == pytest.approx(ref.statistic)
        assert row["spearman_pvalue"] == pytest.approx(ref.pvalue)
        assert row["spearman_units"] == len(per_rep)
        assert row["auc_ci_low"] <= row["auc_ci_high"]


def test_spearman_with_one_seed_per_replicate_is_scipys():
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=25,
                              strategies=(StrategySpec("baseline", (0.4, 0.6), signal=0.5),))
    df = simulate_decisions(design, seed=9)
    m = GroupMetrics.from_decisions(df, n_boot=0)
    for b, g in df.groupby("blueprint"):
        ref = sps.spearmanr(g["statistic"], g["value"])
        row = m.by_group.loc[("baseline", b)]
        assert row["spearman_rho"] == pytest.approx(ref.statistic)
        assert row["spearman_pvalue"] == pytest.approx(ref.pvalue)
        assert row["spearman_units"] == 25


def test_overall_metrics_match_sklearn(table, metrics):
    for s, g in table.groupby("strategy"):
        row = metrics.overall.loc[s]
        y, p = g["valuable"], g["passed"]
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
        assert row["mcc"] == pytest.approx(matthews_corrcoef(y, p))
        assert row["realized_utility"] == pytest.approx(g.loc[p, "value"].sum())
        assert row["pass_rate"] == pytest.approx(p.mean())


def test_disparity_functions_equal_group_table_and_core_counts(table, metrics):
    pr = metrics.metric("pass_rate")
    tpr = metrics.metric("tpr")
    fpr = metrics.metric("fpr")
    # Hand computation from the group table.
    pd.testing.assert_series_equal(pass_rate_gap(metrics), (pr.max(1) - pr.min(1)).rename("pass_rate_gap"),
                                   check_names=False)
    pd.testing.assert_series_equal(pass_rate_ratio(metrics), (pr.min(1) / pr.max(1)),
                                   check_names=False)
    eo = np.maximum(tpr.max(1) - tpr.min(1), fpr.max(1) - fpr.min(1))
    pd.testing.assert_series_equal(equalized_odds_gap(metrics), eo, check_names=False)
    # The core count-based computation used by the bootstrap gives the same numbers.
    arrays = build_arrays(validate_decisions(table), strategies=metrics.strategies)
    core = pd.DataFrame(strategy_metrics(arrays.counts.sum(axis=0)), index=metrics.strategies,
                        columns=STRATEGY_METRICS)
    for fn in (pass_rate_gap, pass_rate_ratio, equal_opportunity_gap, equalized_odds_gap):
        np.testing.assert_allclose(fn(metrics).to_numpy(), core[fn.__name__].to_numpy())
    np.testing.assert_allclose(core["balanced_accuracy"], metrics.overall["balanced_accuracy"])
    np.testing.assert_allclose(core["mcc"], metrics.overall["mcc"])


def test_gap_skips_undefined_groups():
    # Blueprint "c" has no valuable seed: its TPR is undefined and must not count as 0.
    df = pd.DataFrame({
        "replicate": [0, 1, 0, 1, 0, 1], "blueprint": ["a", "a", "b", "b", "c", "c"],
        "strategy": "s", "passed": [True, False, True, True, False, False],
        "pass_epoch": [10, None, 10, 10, None, None], "statistic": [1.0, 0.0, 2.0, 2.0, 0.0, 0.0],
        "value": [1.0, 1.0, 1.0, -1.0, -1.0, -1.0],
        "valuable": [True, True, True, False, False, False]})
    m = GroupMetrics.from_decisions(df, n_boot=0)
    assert np.isnan(m.metric("tpr").loc["s", "c"])
    assert equal_opportunity_gap(m)["s"] == pytest.approx(1.0 - 0.5)
    assert pass_rate_gap(m)["s"] == pytest.approx(1.0)
    assert pass_rate_ratio(m)["s"] == pytest.approx(0.0)


def test_resampled_auc_is_the_auc_of_the_resampled_table():
    rng = np.random.default_rng(0)
    n_rep = 5
    rep = np.repeat(np.arange(n_rep), 4)
    stat = rng.integers(0, 4, rep.size).astype(float)  # many ties
    val = rng.random(rep.size) < 0.5
    M, pos, neg = pair_counts(stat, val, rep, n_rep)
    w = np.array([[2, 0, 1, 1, 1], [0, 0, 3, 1, 1], [1, 1, 1, 1, 1]], dtype=float)
    point, boot = auc_with_bootstrap(M[None], pos[None], neg[None], w)
    assert point[0] == pytest.approx(roc_auc_score(val, stat))
    for i, wi in enumerate(w):
        idx = np.concatenate([np.flatnonzero(rep == r) for r in range(n_rep) for _ in range(int(wi[r]))])
        assert boot[i, 0] == pytest.approx(roc_auc_score(val[idx], stat[idx]))


def test_metric_lookup_error_names_the_choices(metrics):
    with pytest.raises(Exception, match="pass_rate"):
        metrics.metric("accuracy")
