"""Within-strategy tests: does the gate's decision / statistic depend on the blueprint?"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as sps

from esper_ab.stats._counts import DecisionArrays
from esper_ab.stats._results import TestResult

CHI2_NAME = "blueprint_pass_independence"
KRUSKAL_NAME = "statistic_by_blueprint"
_CHUNK_CELLS = 2_000_000  # permutation matrix cells per chunk (memory bound)


def _chi2_stat(passes: np.ndarray, n_b: np.ndarray, total_pass: float) -> np.ndarray:
    """Pearson chi-square of blueprint × {pass, fail} tables with fixed margins (vectorized)."""
    n = n_b.sum()
    expected = n_b * total_pass / n
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(expected > 0, 1.0 / expected, 0.0) + np.where(
            n_b - expected > 0, 1.0 / (n_b - expected), 0.0)
    return ((passes - expected) ** 2 * inv).sum(axis=-1)


def blueprint_pass_test(
    arrays: DecisionArrays, *, strategy: str, n_perm: int, rng: np.random.Generator
) -> TestResult | None:
    """Independence of blueprint and pass within one strategy, with Cramér's V.

    Pearson's chi-square (no continuity correction) when every expected count is ≥ 5;
    otherwise a permutation test of the same statistic in which pass labels are shuffled
    *within replicates* (the replicate is the independent unit), with p = (1 + k)/(1 + n_perm).
    """
    rows = arrays.strategy_code == arrays.strategies.index(strategy)
    nb = len(arrays.blueprints)
    if nb < 2:
        return None
    bp = arrays.blueprint_code[rows]
    passed = arrays.frame["passed"].to_numpy(dtype=bool)[rows]
    n_pass = np.bincount(bp, weights=passed, minlength=nb)
    table = np.stack([n_pass, np.bincount(bp, minlength=nb) - n_pass], axis=1)
    n = table.sum()
    if (table.sum(axis=0) == 0).any():
        return TestResult(
            name=CHI2_NAME, method="none: every seed passed, or none did", statistic=0.0,
            pvalue=1.0, effect_size=0.0, effect_size_name="cramers_v", strategy=strategy,
            n_units=int(n), note="no variation in pass; independence holds trivially")
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    if expected.min() >= 5:
        res = sps.chi2_contingency(table, correction=False)
        stat, p = float(res.statistic), float(res.pvalue)
        method = "Pearson chi-square test of independence (blueprint x pass)"
    else:
        stat, p = _permutation_chi2(arrays.replicate_code[rows], bp, passed, table,
                                    n_perm=n_perm, rng=rng)
        method = (f"permutation test of Pearson chi-square, pass shuffled within replicates "
                  f"({n_perm} permutations; an expected count < 5)")
    return TestResult(
        name=CHI2_NAME, method=method, statistic=stat, pvalue=p,
        effect_size=float(np.sqrt(stat / n)), effect_size_name="cramers_v",
        strategy=strategy, n_units=int(n))


def _permutation_chi2(
    rep: np.ndarray, bp: np.ndarray, passed: np.ndarray, table: np.ndarray, *, n_perm: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    order = np.argsort(rep, kind="stable")
    rep = rep[order].astype(float)
    passed = passed[order].astype(float)
    bp = bp[order]
    onehot = np.zeros((len(bp), table.shape[0]))
    onehot[np.arange(len(bp)), bp] = 1.0
    n_b = table.sum(axis=1)
    total = table[:, 0].sum()
    observed = float(_chi2_stat(table[:, 0], n_b, total))
    chunk = max(1, _CHUNK_CELLS // max(1, len(bp)))
    k = 0
    done = 0
    while done < n_perm:
        m = min(chunk, n_perm - done)
        # rep + U sorts each replicate's rows among themselves: a within-replicate shuffle.
        perm = np.argsort(rep[None, :] + rng.random((m, len(bp))), axis=1)
        stats = _chi2_stat(passed[perm] @ onehot, n_b, total)
        k += int((stats >= observed * (1 - 1e-9) - 1e-12).sum())
        done += m
    return observed, (1 + k) / (1 + n_perm)


def kruskal_test(arrays: DecisionArrays, *, strategy: str) -> TestResult | None:
    """Kruskal–Wallis H of the (measured) statistic across blueprints, with epsilon-squared."""
    stat = arrays.frame["statistic"].to_numpy(dtype=float)
    rows = (arrays.strategy_code == arrays.strategies.index(strategy)) & ~np.isnan(stat)
    bp = arrays.blueprint_code[rows]
    groups = [stat[rows][bp == j] for j in range(len(arrays.blueprints))]
    groups = [g for g in groups if g.size > 0]
    n = int(sum(g.size for g in groups))
    if len(groups) < 2 or n <= len(groups):
        return None
    method = "Kruskal-Wallis H test (tie-corrected), unmeasured statistics left out"
    if np.unique(np.concatenate(groups)).size == 1:
        return TestResult(name=KRUSKAL_NAME, method="none: every measured statistic is equal",
                          statistic=0.0, pvalue=1.0, effect_size=0.0,
                          effect_size_name="epsilon_squared", strategy=strategy, n_units=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.kruskal(*groups)
    h = float(res.statistic)
    return TestResult(name=KRUSKAL_NAME, method=method, statistic=h, pvalue=float(res.pvalue),
                      effect_size=h / (n - 1), effect_size_name="epsilon_squared",
                      strategy=strategy, n_units=n)
