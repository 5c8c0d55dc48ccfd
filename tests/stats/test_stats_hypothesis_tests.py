"""Every test statistic and p-value pinned to scipy / statsmodels / brute force on fixed tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.stats.contingency import association
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from esper_ab.stats import (
    SimulationDesign,
    StrategySpec,
    TestResult,
    adjust_tests,
    benjamini_hochberg,
    cochran_q,
    holm,
    mcnemar,
    simulate_decisions,
    validate_decisions,
)
from esper_ab.stats._clustered import cochran_test
from esper_ab.stats._counts import build_arrays
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._resample import bca_ci, bootstrap_weights, jackknife_weights, sign_flips
from esper_ab.stats._within import blueprint_pass_test, kruskal_test


def _arrays(df: pd.DataFrame, strategies=None):
    return build_arrays(validate_decisions(df), strategies=strategies)


def _rows(pass_by_bp: dict[str, list[bool]], strategy: str = "s") -> pd.DataFrame:
    """One seed per (replicate, blueprint); list index = replicate."""
    rows = []
    for bp, passes in pass_by_bp.items():
        for r, p in enumerate(passes):
            rows.append({"replicate": r, "blueprint": bp, "strategy": strategy, "passed": p,
                         "pass_epoch": 10 if p else None, "statistic": float(p) + 0.1 * r,
                         "value": 0.0, "valuable": r % 2 == 0})
    return pd.DataFrame(rows)


def test_chi_square_matches_scipy_with_cramers_v():
    rng = np.random.default_rng(0)
    df = _rows({"a": list(rng.random(30) < 0.3), "b": list(rng.random(30) < 0.6),
                "c": list(rng.random(30) < 0.5)})
    res = blueprint_pass_test(_arrays(df), strategy="s", n_perm=4000, rng=rng)
    table = pd.crosstab(df["blueprint"], df["passed"]).to_numpy()
    ref = sps.chi2_contingency(table, correction=False)
    assert "chi-square" in res.method and "permutation of blueprint labels" in res.method
    assert res.statistic == pytest.approx(ref.statistic)
    # One seed per cell, independent seeds: the within-replicate permutation p is close to
    # the asymptotic one (Monte Carlo SE ~0.008 at 4000 permutations).
    assert res.pvalue == pytest.approx(ref.pvalue, abs=0.04)
    assert res.effect_size == pytest.approx(association(table, method="cramer", correction=False))


def test_small_table_uses_within_replicate_permutation_pinned_to_enumeration():
    passes = {"a": [True, True, False], "b": [False, True, False], "c": [False, False, True]}
    df = _rows(passes)
    res = blueprint_pass_test(_arrays(df), strategy="s", n_perm=20000,
                              rng=np.random.default_rng(1))
    assert "permutation" in res.method

    def chi2(p_by_rep):  # p_by_rep[r][j] = pass of blueprint j in replicate r
        table = np.array([[sum(p[j] for p in p_by_rep), sum(1 - p[j] for p in p_by_rep)]
                          for j in range(3)], dtype=float)
        expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
        return ((table - expected) ** 2 / expected).sum()

    obs = [[int(passes[b][r]) for b in "abc"] for r in range(3)]
    assert res.statistic == pytest.approx(chi2(obs))
    perms = [list(itertools.permutations(row)) for row in obs]
    stats = [chi2(combo) for combo in itertools.product(*perms)]
    exact = np.mean(np.asarray(stats) >= chi2(obs) - 1e-12)
    assert res.pvalue == pytest.approx(exact, abs=0.01)


def test_no_variation_in_pass_gives_p_one():
    df = _rows({"a": [True, True], "b": [True, True]})
    res = blueprint_pass_test(_arrays(df), strategy="s", n_perm=10, rng=np.random.default_rng(0))
    assert res.pvalue == 1.0 and res.statistic == 0.0


def test_kruskal_matches_scipy_and_leaves_out_unmeasured():
    df = _rows({"a": [True] * 5, "b": [False] * 5, "c": [True, False] * 2 + [True]})
    stat = np.array([0.3, 1.2, 0.5, np.nan, 0.9, 2.0, 1.1, 1.7, 3.0, 0.2, 0.4, 0.4, 1.0, np.nan, 2.2])
    df["statistic"] = stat
    res = kruskal_test(_arrays(df), strategy="s")
    groups = [stat[0:5], stat[5:10], stat[10:15]]
    ref = sps.kruskal(*[g[~np.isnan(g)] for g in groups])
    assert res.statistic == pytest.approx(ref.statistic)
    assert "permutation of blueprint labels" in res.method  # p: see test_stats_clustered.py
    assert "13 measured seeds" in res.note and res.n_units == 5  # replicates
    assert res.effect_size == pytest.approx(ref.statistic / 12)


@pytest.mark.parametrize(("n10", "n01", "n"), [(3, 9, 40), (0, 5, 20), (7, 7, 30), (12, 30, 100), (40, 25, 90)])
def test_mcnemar_matches_statsmodels(n10, n01, n):
    table = np.array([[n - n10 - n01 - 2, n10], [n01, 2]])
    stat, p, method, ci, diff = mcnemar(n10, n01, n)
    exact = n10 + n01 < 25
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert ("exact" in method) == exact
    assert p == pytest.approx(ref.pvalue)
    assert stat == pytest.approx(ref.statistic)
    assert diff == pytest.approx((n10 - n01) / n)
    se = np.sqrt(n10 + n01 - (n10 - n01) ** 2 / n) / n
    assert ci == pytest.approx((diff - 1.959964 * se, diff + 1.959964 * se), abs=1e-6)


def test_cochran_q_matches_statsmodels():
    rng = np.random.default_rng(4)
    x = (rng.random((40, 4)) < [0.3, 0.5, 0.6, 0.45]).astype(int)
    q, p = cochran_q(x)
    ref = sm_cochrans_q(x)
    assert q == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=10,
                              strategies=tuple(StrategySpec(n, (0.4, 0.6), s) for n, s in
                                               [("baseline", 0.1), ("x", 0.5), ("y", 0.8)]))
    df = simulate_decisions(design, seed=2)
    res = cochran_test(_arrays(df, ("baseline", "x", "y")))
    wide = df.assign(c=(df.passed == df.valuable).astype(int)).pivot_table(
        index=["replicate", "blueprint", "seed"], columns="strategy", values="c")
    assert res.statistic == pytest.approx(sm_cochrans_q(wide[["baseline", "x", "y"]].to_numpy()).statistic)


def test_holm_and_bh_match_statsmodels_and_skip_nan():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.005, 0.5, 0.04])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])
    with_nan = np.insert(p, 2, np.nan)
    np.testing.assert_allclose(np.delete(holm(with_nan), 2), multipletests(p, method="holm")[1])
    assert np.isnan(holm(with_nan)[2]) and np.isnan(benjamini_hochberg(with_nan)[2])
    assert holm([]).shape == (0,) and np.isnan(benjamini_hochberg([np.nan, np.nan])).all()


def test_holm_and_bh_match_a_hand_table():
    # Sorted p: 0.005, 0.01, 0.03, 0.04 (m = 4).
    # Holm: x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    # BH: x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04 -> running min from the top, same.
    p = [0.01, 0.04, np.nan, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06, 0.02])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, np.nan, 0.04, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1


def test_adjust_tests_uses_holm_per_strategy_family_and_bh_per_blueprint_family():
    t = [TestResult("m", "x", 0.0, p, strategy=s) for s, p in zip("abc", [0.01, 0.02, 0.04], strict=True)]
    t += [TestResult("bp", "x", 0.0, p, strategy="a", blueprint=b)
          for b, p in zip("uvwx", [0.01, 0.02, 0.03, 0.5], strict=True)]
    t += [TestResult("q", "x", 0.0, 0.03)]
    out = adjust_tests(t)
    np.testing.assert_allclose([o.pvalue_adjusted for o in out[:3]],
                               multipletests([0.01, 0.02, 0.04], method="holm")[1])
    np.testing.assert_allclose([o.pvalue_adjusted for o in out[3:7]],
                               multipletests([0.01, 0.02, 0.03, 0.5], method="fdr_bh")[1])
    assert out[7].pvalue_adjusted == 0.03 and out[7].adjustment == "none"
    assert [o.pvalue for o in out] == [o.pvalue for o in t]  # raw p kept


def _brute_force_signflip(df: pd.DataFrame, metric) -> float:
    """Exact sign-flip p-value by enumerating label swaps on a pandas table."""
    reps = sorted(df.replicate.unique())

    def diff(frame):
        return metric(frame[frame.strategy == "new"]) - metric(frame[frame.strategy == "baseline"])

    obs = diff(df)
    stats = []
    for flips in itertools.product([False, True], repeat=len(reps)):
        swapped = set(np.asarray(reps)[list(flips)])
        f = df.copy()
        m = f.replicate.isin(swapped)
        f.loc[m, "strategy"] = f.loc[m, "strategy"].map({"new": "baseline", "baseline": "new"})
        stats.append(diff(f))
    return float(np.mean(np.abs(stats) >= abs(obs) - 1e-12)), obs


def _ba(frame):
    return balanced_accuracy_score(frame.valuable, frame.passed)


def _pass_gap(frame):
    r = frame.groupby("blueprint").passed.mean()
    return r.max() - r.min()


def test_sign_flip_test_is_exact_enumeration_over_replicates():
    design = SimulationDesign(blueprints=("a", "b", "c"), n_replicates=7, seeds_per_cell=2,
                              strategies=(StrategySpec("baseline", (0.2, 0.5, 0.8), 0.2),
                                          StrategySpec("new", (0.5, 0.5, 0.5), 0.7)))
    df = simulate_decisions(design, seed=11)
    res = paired_metric_tests(_arrays(df, ("baseline", "new")), strategy="new", baseline="baseline",
                              metrics=("balanced_accuracy", "pass_rate_gap"), n_perm=1000,
                              n_boot=200, ci_level=0.95, rng=np.random.default_rng(0))
    for t, fn in zip(res, (_ba, _pass_gap), strict=True):
        p, obs = _brute_force_signflip(df, fn)
        assert "exact" in t.method
        assert t.statistic == pytest.approx(obs)
        assert t.pvalue == pytest.approx(p)
        assert t.n_units == 7


def test_bca_matches_scipy_bootstrap_on_a_cluster_statistic():
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=15, seeds_per_cell=4,
                              strategies=(StrategySpec("baseline", (0.3, 0.6), 0.3),
                                          StrategySpec("new", (0.5, 0.5), 0.6)))
    arrays = _arrays(simulate_decisions(design, seed=8), ("baseline", "new"))
    from esper_ab.stats._counts import resampled_counts, strategy_metrics

    j = 4  # balanced accuracy
    counts = arrays.counts

    def stat(idx, axis=-1):  # vectorized over leading axes of resampled replicate indices
        idx = np.moveaxis(np.asarray(idx, dtype=int), axis, -1)
        m = strategy_metrics(counts[idx].sum(axis=idx.ndim - 1))
        return m[..., 1, j] - m[..., 0, j]

    R = counts.shape[0]
    B = 20000
    ref = sps.bootstrap((np.arange(R),), stat, vectorized=True, n_resamples=B, method="BCa",
                        rng=np.random.default_rng(3)).confidence_interval
    w = bootstrap_weights(np.random.default_rng(4), B, R)
    boot = strategy_metrics(resampled_counts(w, counts))
    jack = strategy_metrics(resampled_counts(jackknife_weights(R), counts))
    point = stat(np.arange(R))
    lo, hi = bca_ci(np.array(point), boot[:, 1, j] - boot[:, 0, j],
                    jack[:, 1, j] - jack[:, 0, j], 0.95)
    assert float(lo) == pytest.approx(ref.low, abs=0.006)
    assert float(hi) == pytest.approx(ref.high, abs=0.006)


def test_sign_flips_enumerate_all_patterns_when_they_fit():
    flips, exact = sign_flips(np.random.default_rng(0), 64, 6)
    assert exact and flips.shape == (64, 6)
    assert len({tuple(r) for r in flips}) == 64
    flips, exact = sign_flips(np.random.default_rng(0), 63, 6)
    assert not exact and flips.shape == (63, 6)
