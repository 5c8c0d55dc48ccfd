"""A/A under replicate clustering: every test the analysis reports as a test keeps its
false-positive rate at alpha = 0.05 (<= 0.07), where counting seeds as independent does not.

The tables have what real sweeps have: a host effect per replicate, a cell effect per
(replicate, blueprint) shared by its 4 seeds, and a per-(strategy, replicate) shift of each
strategy's statistic (a threshold calibrated per replicate). Three copies of one strategy, no
blueprint effect and no signal: the null of every test holds. The classical versions
(statsmodels / scipy on seeds) are run on the same tables to show the clustering bites.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from esper_ab.stats import SimulationDesign, StrategySpec, simulate_decisions, validate_decisions
from esper_ab.stats._clustered import cochran_test, mcnemar_tests
from esper_ab.stats._counts import DecisionArrays, build_arrays
from esper_ab.stats._fairness import eligibility, paired_fairness_test, rate_moments
from esper_ab.stats._groups import spearman_by_replicate
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._within import blueprint_pass_test, kruskal_test

pytestmark = pytest.mark.slow
ALPHA, BOUND, N_SIMS, N_PERM = 0.05, 0.07, 400, 199
NAMES = ("baseline", "copy_1", "copy_2")
DESIGN = SimulationDesign(
    blueprints=("attention", "conv_light", "depthwise", "norm"), n_replicates=20,
    seeds_per_cell=4, replicate_correlation=0.2, cell_correlation=0.6,
    strategy_replicate_sd=1.0,
    strategies=tuple(StrategySpec(n, (0.4,) * 4, signal=0.0) for n in NAMES))


def _tables():
    """N_SIMS independent A/A tables: one simulation of N_SIMS x 20 replicates (replicates
    are independent in the simulator), cut into blocks of 20 without going back to pandas."""
    big = replace(DESIGN, n_replicates=N_SIMS * DESIGN.n_replicates)
    a = build_arrays(validate_decisions(simulate_decisions(big, seed=70_000)), strategies=NAMES)
    R = DESIGN.n_replicates
    stat = a.frame["statistic"].to_numpy()
    value = a.frame["value"].to_numpy()
    passed = a.frame["passed"].to_numpy()
    order = np.argsort(a.replicate_code, kind="stable")
    bounds = np.searchsorted(a.replicate_code[order], np.arange(N_SIMS + 1) * R)
    for i in range(N_SIMS):
        rows = np.sort(order[bounds[i]:bounds[i + 1]])
        seeds, seed_code = np.unique(a.seed_code[rows], return_inverse=True)
        frame = pd.DataFrame({"passed": passed[rows], "statistic": stat[rows],
                              "value": value[rows], "valuable": a.frame["valuable"].to_numpy()[rows]})
        yield i, DecisionArrays(
            frame=frame, strategies=a.strategies, blueprints=a.blueprints,
            replicates=tuple(range(R)), strategy_code=a.strategy_code[rows],
            blueprint_code=a.blueprint_code[rows], replicate_code=a.replicate_code[rows] - i * R,
            counts=a.counts[i * R:(i + 1) * R], seed_code=seed_code,
            seed_blueprint=a.seed_blueprint[seeds], seed_replicate=a.seed_replicate[seeds] - i * R)


def _check(rejections: dict[str, int], naive: dict[str, int]) -> None:
    rates = {k: v / N_SIMS for k, v in rejections.items()}
    print("A/A rejection rates:", rates)
    assert all(r <= BOUND for r in rates.values()), rates
    naive_rates = {k: v / N_SIMS for k, v in naive.items()}
    print("seeds counted as independent:", naive_rates)
    assert all(r > 0.12 for r in naive_rates.values()), naive_rates


def test_within_strategy_tests_and_spearman_are_replicate_valid():
    rej = dict.fromkeys(("blueprint_pass_independence", "statistic_by_blueprint",
                         "statistic_value_spearman"), 0)
    naive = dict.fromkeys(("chi2 on seeds", "kruskal on seeds", "spearman on seeds"), 0)
    for i, arrays in _tables():
        rng = np.random.default_rng(i)
        rej["blueprint_pass_independence"] += blueprint_pass_test(
            arrays, strategy="baseline", n_perm=N_PERM, rng=rng).pvalue < ALPHA
        rej["statistic_by_blueprint"] += kruskal_test(
            arrays, strategy="baseline", n_perm=N_PERM, rng=rng).pvalue < ALPHA
        base = arrays.strategy_code == 0
        bp, f = arrays.blueprint_code[base], arrays.frame[base]
        passed = f["passed"].to_numpy()
        table = np.stack([np.bincount(bp, weights=passed), np.bincount(bp, weights=~passed)], 1)
        naive["chi2 on seeds"] += sps.chi2_contingency(table, correction=False).pvalue < ALPHA
        stat = f["statistic"].to_numpy()
        naive["kruskal on seeds"] += sps.kruskal(*[stat[bp == j] for j in range(4)]).pvalue < ALPHA
        one = bp == 0
        _, p, _, _ = spearman_by_replicate(stat[one], f["value"].to_numpy()[one],
                                           arrays.replicate_code[base][one])
        rej["statistic_value_spearman"] += p < ALPHA
        naive["spearman on seeds"] += sps.spearmanr(stat[one], f["value"].to_numpy()[one]).pvalue < ALPHA
    # Spearman's null is only broken by the shared replicate effects, mildly: its naive
    # version is not required to be far off, so it is checked separately.
    spearman_naive = naive.pop("spearman on seeds") / N_SIMS
    _check(rej, naive)
    assert spearman_naive > rej["statistic_value_spearman"] / N_SIMS


def test_paired_tests_are_replicate_valid():
    rej = dict.fromkeys(("correctness_mcnemar", "blueprint_pass_mcnemar",
                         "correctness_cochran_q", "balanced_accuracy_vs_baseline",
                         "equalized_odds_gap less fair than baseline"), 0)
    naive = dict.fromkeys(("mcnemar on seeds", "cochran q on seeds"), 0)
    for i, arrays in _tables():
        rng = np.random.default_rng(i)
        mc = mcnemar_tests(arrays, strategy="copy_1", baseline="baseline", ci_level=0.95,
                           n_perm=N_PERM, rng=rng)
        rej["correctness_mcnemar"] += mc[0].pvalue < ALPHA
        rej["blueprint_pass_mcnemar"] += mc[1].pvalue < ALPHA
        rej["correctness_cochran_q"] += cochran_test(arrays, n_perm=N_PERM, rng=rng).pvalue < ALPHA
        (ba,) = paired_metric_tests(arrays, strategy="copy_1", baseline="baseline",
                                    metrics=("balanced_accuracy",), n_perm=N_PERM, n_boot=0,
                                    ci_level=0.95, rng=rng)
        rej["balanced_accuracy_vs_baseline"] += ba.pvalue < ALPHA
        mask, _ = eligibility(arrays.counts, arrays.blueprints, min_valuable=10,
                              min_non_valuable=10)
        _, p_fair = paired_fairness_test(rate_moments(arrays.counts)[:, [1, 0]], mask,
                                         n_perm=N_PERM, rng=rng)
        rej["equalized_odds_gap less fair than baseline"] += p_fair[0] < ALPHA
        passed, valuable = arrays.seed_matrix("passed"), arrays.seed_matrix("valuable")
        x = (passed == valuable).astype(int).T           # seeds x strategies, all judged
        cs, cb = x[:, 1] == 1, x[:, 0] == 1
        two = np.array([[np.sum(cs & cb), np.sum(cs & ~cb)], [np.sum(~cs & cb), np.sum(~cs & ~cb)]])
        naive["mcnemar on seeds"] += sm_mcnemar(two, exact=False).pvalue < ALPHA
        naive["cochran q on seeds"] += sm_cochrans_q(x).pvalue < ALPHA
    _check(rej, naive)
