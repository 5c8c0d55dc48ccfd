"""Replicate-valid p-values pinned to brute-force enumeration and to statsmodels / scipy;
Spearman's rho and p on one unit; pairing without a seed column; duplicate rows refused."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from esper_ab.errors import DataError
from esper_ab.stats import (
    GroupMetrics,
    SimulationDesign,
    StrategySpec,
    analyze,
    simulate_decisions,
    validate_decisions,
)
from esper_ab.stats._clustered import cochran_test, mcnemar_tests
from esper_ab.stats._counts import build_arrays
from esper_ab.stats._within import blueprint_pass_test, kruskal_test


def _arrays(df, strategies=None):
    return build_arrays(validate_decisions(df), strategies=strategies)


def _pair_table(n_replicates: int, seeds: int, seed: int) -> pd.DataFrame:
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=n_replicates,
                              seeds_per_cell=seeds, strategy_replicate_sd=0.5,
                              strategies=(StrategySpec("baseline", (0.3, 0.7), 0.3),
                                          StrategySpec("new", (0.5, 0.5), 0.6)))
    return simulate_decisions(design, seed=seed)


def _durkalski_by_hand(df: pd.DataFrame, outcome) -> tuple[float, float]:
    """(X^2, exact sign-flip p) from per-replicate discordance, by enumeration."""
    w = df.assign(o=outcome(df)).pivot_table(index=["replicate", "blueprint", "seed"],
                                            columns="strategy", values="o")
    d = (w["new"] - w["baseline"]).groupby(level="replicate").sum().to_numpy()
    x2 = d.sum() ** 2 / (d ** 2).sum()
    sums = [abs(np.dot(signs, d)) for signs in itertools.product([1, -1], repeat=len(d))]
    return x2, float(np.mean(np.asarray(sums) >= abs(d.sum()) - 1e-12))


def test_clustered_mcnemar_is_durkalski_with_an_exact_sign_flip_p():
    df = _pair_table(9, 3, seed=1)
    res = mcnemar_tests(_arrays(df, ("baseline", "new")), strategy="new", baseline="baseline",
                        ci_level=0.95, n_perm=4096, rng=np.random.default_rng(0))
    x2, p = _durkalski_by_hand(df, lambda f: (f.passed == f.valuable).astype(float))
    assert res[0].statistic == pytest.approx(x2) and res[0].pvalue == pytest.approx(p)
    assert "exact" in res[0].method and res[0].n_units == 9
    for t in res[1:]:
        sub = df[df.blueprint == t.blueprint]
        x2, p = _durkalski_by_hand(sub, lambda f: f.passed.astype(float))
        assert t.statistic == pytest.approx(x2) and t.pvalue == pytest.approx(p)


def test_with_one_seed_per_replicate_the_statistic_is_mcnemars_chi_square():
    df = _pair_table(40, 1, seed=2)
    df = df[df.blueprint == "a"]
    (res, _) = mcnemar_tests(_arrays(df, ("baseline", "new")), strategy="new",
                             baseline="baseline", ci_level=0.95, n_perm=2000,
                             rng=np.random.default_rng(0))
    w = df.pivot_table(index=["replicate", "seed"], columns="strategy", values="passed")
    val = df[df.strategy == "new"].set_index(["replicate", "seed"])["valuable"]
    cs, cb = w["new"].astype(bool) == val, w["baseline"].astype(bool) == val
    table = pd.crosstab(cs, cb).reindex(index=[True, False], columns=[True, False], fill_value=0)
    ref = sm_mcnemar(table.to_numpy(), exact=False, correction=False)
    assert res.statistic == pytest.approx(ref.statistic)
    # Sign flips of +-1 discordances are the exact (binomial) McNemar test.
    exact = sm_mcnemar(table.to_numpy(), exact=True)
    assert res.pvalue == pytest.approx(exact.pvalue, abs=0.015)


def test_clustered_cochran_q_statistic_is_statsmodels_and_p_is_the_label_permutation():
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=4, seeds_per_cell=2,
                              strategies=tuple(StrategySpec(n, (0.4, 0.6), s) for n, s in
                                               [("baseline", 0.1), ("x", 0.5), ("y", 0.8)]))
    df = simulate_decisions(design, seed=2)
    res = cochran_test(_arrays(df, ("baseline", "x", "y")), n_perm=20000,
                       rng=np.random.default_rng(0))
    wide = df.assign(c=(df.passed == df.valuable).astype(int)).pivot_table(
        index=["replicate", "blueprint", "seed"], columns="strategy", values="c")
    x = wide[["baseline", "x", "y"]].to_numpy()
    assert res.statistic == pytest.approx(sm_cochrans_q(x).statistic)
    c = wide.groupby(level="replicate").sum()[["baseline", "x", "y"]].to_numpy()
    obs = (c.sum(axis=0) ** 2).sum()
    perms = list(itertools.permutations(range(3)))
    stats = [(sum(c[r, list(p)] for r, p in enumerate(combo)) ** 2).sum()
             for combo in itertools.product(perms, repeat=len(c))]
    exact = float(np.mean(np.asarray(stats) >= obs - 1e-9))
    assert res.pvalue == pytest.approx(exact, abs=0.01)


def _cell_table(seed: int) -> pd.DataFrame:
    design = SimulationDesign(blueprints=("a", "b", "c"), n_replicates=3, seeds_per_cell=2,
                              strategies=(StrategySpec("s", (0.2, 0.5, 0.8), 0.3),))
    return simulate_decisions(design, seed=seed)


def _enumerate_cells(df: pd.DataFrame, stat) -> float:
    """Exact p over every within-replicate permutation of the blueprint labels of cells;
    ``stat(blueprint_codes)`` scores one relabelling of the rows of ``df``."""
    bps = ["a", "b", "c"]
    code = df.blueprint.map({b: i for i, b in enumerate(bps)}).to_numpy()
    rep = df.replicate.to_numpy()
    reps = sorted(set(rep))
    obs = stat(code)
    out = []
    for combo in itertools.product(list(itertools.permutations(range(3))), repeat=len(reps)):
        relabel = code.copy()
        for r, perm in zip(reps, combo, strict=True):
            m = rep == r
            relabel[m] = np.asarray(perm)[code[m]]
        out.append(stat(relabel))
    return float(np.mean(np.asarray(out) >= obs - 1e-9))


def test_chi_square_and_kruskal_p_values_are_the_cell_permutation_by_enumeration():
    df = _cell_table(seed=7)
    arrays = _arrays(df)
    passed, value = df.passed.to_numpy(), df.statistic.to_numpy()

    def chi2(code):
        table = np.stack([np.bincount(code, weights=passed, minlength=3),
                          np.bincount(code, weights=~passed, minlength=3)], axis=1)
        return sps.chi2_contingency(table, correction=False).statistic

    def kw(code):
        return sps.kruskal(*[value[code == j] for j in range(3)]).statistic

    code = df.blueprint.map({"a": 0, "b": 1, "c": 2}).to_numpy()
    res = blueprint_pass_test(arrays, strategy="s", n_perm=20000, rng=np.random.default_rng(1))
    assert res.statistic == pytest.approx(chi2(code))
    assert res.pvalue == pytest.approx(_enumerate_cells(df, chi2), abs=0.01)
    res = kruskal_test(arrays, strategy="s", n_perm=20000, rng=np.random.default_rng(2))
    assert res.statistic == pytest.approx(kw(code))
    assert res.pvalue == pytest.approx(_enumerate_cells(df, kw), abs=0.01)


def test_spearman_rho_and_p_describe_the_same_unit():
    design = SimulationDesign(blueprints=("a",), n_replicates=12, seeds_per_cell=4,
                              strategies=(StrategySpec("s", (0.5,), signal=0.6),))
    df = simulate_decisions(design, seed=3)
    row = GroupMetrics.from_decisions(df, n_boot=20).by_group.loc[("s", "a")]
    g = df.assign(rs=sps.rankdata(df.statistic), rv=sps.rankdata(df.value)).groupby("replicate")
    means = g[["rs", "rv"]].mean()
    ref = sps.spearmanr(means.rs, means.rv)
    assert row["spearman_units"] == 12
    assert row["spearman_rho"] == pytest.approx(ref.statistic)
    assert row["spearman_pvalue"] == pytest.approx(ref.pvalue)
    assert row["spearman_rho_seeds"] == pytest.approx(sps.spearmanr(df.statistic, df.value).statistic)


def test_without_a_seed_column_strategies_pair_by_sorted_keys_not_row_order():
    df = _pair_table(8, 3, seed=4).drop(columns="seed")
    a = analyze(df, n_boot=30, n_perm=64, seed=0)
    # Shuffle one strategy's rows inside every cell: pairing by row order would change.
    rng = np.random.default_rng(0)
    new = df[df.strategy == "new"].sample(frac=1.0, random_state=rng)
    b = analyze(pd.concat([df[df.strategy == "baseline"], new]), n_boot=30, n_perm=64, seed=0)
    ta = a.find_test("correctness_mcnemar", strategy="new")
    tb = b.find_test("correctness_mcnemar", strategy="new")
    assert (ta.statistic, ta.pvalue) == (tb.statistic, tb.pvalue)
    # The pairs are the true seeds: the same as with the seed column.
    c = analyze(_pair_table(8, 3, seed=4), n_boot=30, n_perm=64, seed=0)
    assert c.find_test("correctness_mcnemar", strategy="new").statistic == ta.statistic


def test_exact_duplicate_rows_are_refused_without_a_seed_column():
    df = _pair_table(3, 2, seed=5).drop(columns="seed")
    dup = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError, match="identical.*no 'seed' column"):
        validate_decisions(dup)
    validate_decisions(df)  # distinct rows are fine
