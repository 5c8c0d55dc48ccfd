"""The observational analysis against independent references: statsmodels (cluster-robust
variance, Wilson interval), brute-force enumeration with scipy's chi-square, and simulation
(coverage under clustering, A/A rejection rate, power)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

import esper_ab.stats._observational as obs
from esper_ab.errors import DataError
from esper_ab.stats import (
    NOT_COMPUTABLE,
    analyze_observational,
    clustered_pass_rate,
    validate_observational,
    within_run_permutation,
)


def _clustered(rng, g, m, p, rho):
    """g clusters of m seeds; a cluster's pass probability is Beta with mean p, ICC rho."""
    a = p * (1 - rho) / rho
    b = (1 - p) * (1 - rho) / rho
    q = rng.beta(a, b, size=g)
    return (rng.random((g, m)) < q[:, None]).ravel(), np.repeat(np.arange(g), m)


def test_variance_is_statsmodels_cluster_robust_and_ci_is_wilson_on_effective_n():
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        y, g = _clustered(rng, 9, 4, 0.4, 0.4)
        n = len(y)
        p, lo, hi, deff = clustered_pass_rate(y, g)
        if not 0 < p < 1:
            continue
        fit = sm.OLS(y.astype(float), np.ones(n)).fit(cov_type="cluster",
                                                       cov_kwds={"groups": g})
        v0 = p * (1 - p) / n
        assert deff == pytest.approx(max(1.0, fit.bse[0] ** 2 / v0), rel=1e-10)
        ref = proportion_confint(p * n / deff, n / deff, alpha=0.05, method="wilson")
        assert (lo, hi) == pytest.approx(ref, rel=1e-10)
        checked += int(deff > 1)
    assert checked >= 10           # the design effect was active in most tables


def test_all_pass_or_none_is_plain_wilson():
    g = np.arange(7)
    _, lo, hi, deff = clustered_pass_rate(np.ones(7, bool), g)
    assert deff == 1.0
    assert (lo, hi) == pytest.approx(proportion_confint(7, 7, method="wilson"))
    _, lo, hi, _ = clustered_pass_rate(np.zeros(7, bool), g)
    assert (lo, hi) == pytest.approx(proportion_confint(0, 7, method="wilson"))


def test_clustered_ci_covers_under_clustering_where_the_naive_one_does_not():
    rng = np.random.default_rng(11)
    p_true, hits, naive = 0.3, 0, 0
    sims = 1500
    for _ in range(sims):
        y, g = _clustered(rng, 12, 4, p_true, 0.3)
        _, lo, hi, _ = clustered_pass_rate(y, g)
        hits += lo <= p_true <= hi
        nlo, nhi = proportion_confint(y.sum(), len(y), method="wilson")
        naive += nlo <= p_true <= nhi
    assert hits / sims >= 0.92          # measured 0.935 (naive Wilson: 0.826)
    assert naive / sims < hits / sims - 0.05


def _brute_force_pvalue(passed, bp, run, n_bp):
    """Every permutation of blueprint labels within each run, chi-square by scipy."""
    def chi2(labels):
        table = np.zeros((n_bp, 2))
        np.add.at(table, (labels, 1 - passed), 1)
        return sps.chi2_contingency(table, correction=False).statistic

    observed = chi2(bp)
    runs = [np.flatnonzero(run == r) for r in np.unique(run)]
    stats, gaps = [], []
    for combo in itertools.product(*[itertools.permutations(bp[idx]) for idx in runs]):
        labels = np.empty_like(bp)
        for idx, perm in zip(runs, combo, strict=True):
            labels[idx] = perm
        stats.append(chi2(labels))
        rate = [passed[labels == b].mean() for b in range(n_bp)]
        gaps.append(max(rate) - min(rate))
    stats = np.array(stats)
    return float((stats >= observed - 1e-9).mean()), float(np.mean(gaps)), observed


def test_exact_permutation_null_equals_brute_force_enumeration(monkeypatch):
    # 4 runs x 3 seeds, 3 blueprints in rotation (as esper-lite's scripted episodes do)
    bp = np.array([0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2])
    run = np.repeat(np.arange(4), 3)
    passed = np.array([1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0])
    ref_p, ref_gap, ref_chi2 = _brute_force_pvalue(passed, bp, run, 3)
    res = within_run_permutation(passed, bp, run, 3, n_perm=1, rng=np.random.default_rng(0))
    assert res.exact and res.pvalue == pytest.approx(ref_p, abs=1e-12)
    assert res.chi2 == pytest.approx(ref_chi2) and res.gap_null_mean == pytest.approx(ref_gap)
    # Monte Carlo path: within 4 standard errors of the exact value
    monkeypatch.setattr(obs, "MAX_EXACT", 0)
    mc = within_run_permutation(passed, bp, run, 3, n_perm=20000,
                                rng=np.random.default_rng(1))
    assert not mc.exact
    assert abs(mc.pvalue - ref_p) < 4 * np.sqrt(ref_p * (1 - ref_p) / 20000) + 1e-4
    assert mc.gap_null_mean == pytest.approx(ref_gap, abs=0.01)


def _simulated(rng, n_runs, effect):
    """Rotating design of 7 blueprints, 3 per run, strong run effects (arrays)."""
    bp = np.array([(r + 3 * k) % 7 for r in range(n_runs) for k in range(3)])
    run = np.repeat(np.arange(n_runs), 3)
    q = rng.beta(1.0, 1.0, size=n_runs)[run]          # each run's own pass probability
    prob = q * np.where(effect & (bp == 0), 0.1, 1.0)
    return rng.random(len(bp)) < prob, bp, run


def _pvalue(passed, bp, run, rng):
    if passed.all() or not passed.any():
        return 1.0
    return within_run_permutation(passed, bp, run, 7, n_perm=199, rng=rng).pvalue


def test_blueprint_pass_test_keeps_its_level_under_run_clustering_and_has_power():
    rng = np.random.default_rng(7)
    sims = 300
    rejected = sum(_pvalue(*_simulated(rng, 16, False), rng) <= 0.05 for _ in range(sims))
    assert rejected / sims <= 0.07               # measured 0.043 with this seed
    power = sum(_pvalue(*_simulated(rng, 42, True), rng) <= 0.05 for _ in range(40))
    assert power / 40 >= 0.6                     # measured 0.825 with this seed
    # the same table through the full analysis gives the same kind of answer
    passed, bp, run = _simulated(np.random.default_rng(5), 16, True)
    t = pd.DataFrame({"replicate": run.astype(str), "blueprint": [f"bp{b}" for b in bp],
                      "strategy": "s", "passed": passed, "pass_epoch": np.nan,
                      "statistic": np.nan})
    row = analyze_observational(t, n_perm=199, n_boot=50).tests.iloc[0]
    assert 0.0 < row["pvalue"] <= 1.0 and row["n_runs"] == 16


def test_per_blueprint_table_gap_and_ratio_by_hand():
    t = pd.DataFrame({
        "replicate": ["r1", "r1", "r2", "r2", "r3", "r3", "r4"],
        "blueprint": ["a", "b", "a", "b", "a", "b", "a"],
        "strategy": "s", "passed": [1, 0, 1, 1, 0, 0, 0],
        "pass_epoch": [12, np.nan, 16, 12, np.nan, np.nan, np.nan],
        "statistic": [0.5, 0.02, 1.5, 0.3, 0.01, np.nan, 0.2],
        "g2_attempts": [4, 10, 5, 4, 10, 10, 0]})
    a = analyze_observational(t, n_boot=200)
    pb = a.per_blueprint.set_index("blueprint")
    # r4's seed never reached G2: left out and counted
    assert a.never_judged == {"s": 1}
    assert pb.loc["a", ["n", "runs", "passes"]].tolist() == [3, 3, 2]
    assert pb.loc["a", "pass_rate"] == pytest.approx(2 / 3)
    assert pb.loc["b", "pass_rate"] == pytest.approx(1 / 3)
    assert pb.loc["a", "median_pass_epoch"] == 14.0 and pb.loc["b", "median_pass_epoch"] == 12
    assert pb.loc["b", ["stat_n", "stat_unmeasured"]].tolist() == [2, 1]
    assert pb.loc["a", "stat_median"] == pytest.approx(0.5)
    d = a.disparities.iloc[0]
    assert d["pass_rate_gap"] == pytest.approx(1 / 3)
    assert d["pass_rate_ratio"] == pytest.approx(0.5)
    assert d["gap_ci_low"] <= d["pass_rate_gap"] <= d["gap_ci_high"]
    assert NOT_COMPUTABLE in a.format_table()
    assert a.to_dict()["not_computed"] == NOT_COMPUTABLE


def test_validation_errors_name_the_column():
    good = pd.DataFrame({"replicate": ["r"], "blueprint": ["a"], "strategy": ["s"],
                         "passed": [True], "pass_epoch": [1], "statistic": [0.1]})
    validate_observational(good)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['statistic'\]"):
        validate_observational(good.drop(columns="statistic"))
    with pytest.raises(DataError, match="column 'passed' row 0 has 'maybe'"):
        validate_observational(good.assign(passed=["maybe"]))
    with pytest.raises(DataError, match="column 'statistic' row 0"):
        validate_observational(good.assign(statistic=["high"]))
    with pytest.raises(DataError, match="none|no seed"):
        analyze_observational(good.assign(passed=[False], g2_attempts=[0]))
