"""Within-strategy tests: does the gate's decision / statistic depend on the blueprint?

Both tests keep their classical statistic (Pearson's chi-square of blueprint x pass with
Cramér's V; the tie-corrected Kruskal–Wallis H with epsilon-squared, as scipy computes them)
but take the p-value from a permutation that respects the design: within each replicate the
blueprint labels of whole cells (replicate x blueprint: all seeds of one blueprint in that
replicate) are shuffled. Seeds of one cell share the host, the data order and the slot, so
they are not independent; cells of one replicate are exchangeable when the blueprint has no
effect, whatever the replicate and cell effects. p = (1 + k) / (1 + n_perm).
"""

from __future__ import annotations

import warnings

import numpy as np

from esper_ab.stats._counts import DecisionArrays
from esper_ab.stats._lazy import sps
from esper_ab.stats._results import TestResult

CHI2_NAME = "blueprint_pass_independence"
KRUSKAL_NAME = "statistic_by_blueprint"
_CHUNK_CELLS = 2_000_000  # permutation matrix cells per chunk (memory bound)
PERMUTATION = ("permutation of blueprint labels of whole (replicate x blueprint) cells within "
               "replicates")


def _chi2_stat(passes: np.ndarray, n_b: np.ndarray, total_pass: float) -> np.ndarray:
    """Pearson chi-square of blueprint × {pass, fail} tables with fixed margins (vectorized)."""
    n = n_b.sum(axis=-1, keepdims=True)
    expected = n_b * total_pass / n
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(expected > 0, 1.0 / expected, 0.0) + np.where(
            n_b - expected > 0, 1.0 / (n_b - expected), 0.0)
    return ((passes - expected) ** 2 * inv).sum(axis=-1)


def cell_permutation_pvalue(cells: np.ndarray, statistic, observed: float, *, n_perm: int,
                            rng: np.random.Generator) -> float:
    """p-value of ``statistic(totals)`` when the blueprint axis of ``cells`` (R, B, F) is
    permuted independently within each replicate; ``totals`` are the permuted sums over
    replicates (P, B, F). (1 + k) / (1 + n_perm), ties counted as extreme."""
    R, B, _ = cells.shape
    chunk = max(1, _CHUNK_CELLS // max(1, R * B))
    k = done = 0
    while done < n_perm:
        m = min(chunk, n_perm - done)
        perm = np.argsort(rng.random((m, R, B)), axis=-1)                  # (m, R, B)
        shuffled = np.take_along_axis(cells[None], perm[..., None], axis=2)  # (m, R, B, F)
        stats = statistic(shuffled.sum(axis=1))
        k += int((stats >= observed * (1 - 1e-9) - 1e-12).sum())
        done += m
    return (1 + k) / (1 + n_perm)


def _cells(arrays: DecisionArrays, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(R, B, len(values)) sums of each value column over the rows of each cell."""
    R, B = arrays.n_replicates, len(arrays.blueprints)
    flat = arrays.replicate_code[rows] * B + arrays.blueprint_code[rows]
    out = np.zeros((R * B, values.shape[1]))
    np.add.at(out, flat, values)
    return out.reshape(R, B, -1)


def blueprint_pass_test(
    arrays: DecisionArrays, *, strategy: str, n_perm: int, rng: np.random.Generator
) -> TestResult | None:
    """Independence of blueprint and pass within one strategy, with Cramér's V."""
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
            n_units=arrays.n_replicates, note="no variation in pass; independence holds trivially")
    present = table.sum(axis=1) > 0
    stat = float(sps.chi2_contingency(table[present], correction=False).statistic)
    cells = _cells(arrays, rows, np.stack([passed, np.ones(passed.size)], axis=1).astype(float))
    total = float(table[:, 0].sum())
    p = cell_permutation_pvalue(
        cells, lambda t: _chi2_stat(t[..., 0], t[..., 1], total), stat, n_perm=n_perm, rng=rng)
    return TestResult(
        name=CHI2_NAME, method=f"Pearson chi-square (blueprint x pass); p by {PERMUTATION} "
                               f"({n_perm} permutations)",
        statistic=stat, pvalue=p, effect_size=float(np.sqrt(stat / n)),
        effect_size_name="cramers_v", strategy=strategy, n_units=arrays.n_replicates,
        note=f"{int(n)} seeds in {arrays.n_replicates} replicates")


def _kruskal_h(rank_sums: np.ndarray, sizes: np.ndarray, n: int, tie: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(sizes > 0, rank_sums ** 2 / np.where(sizes > 0, sizes, 1.0), 0.0)
    return (12.0 / (n * (n + 1)) * terms.sum(axis=-1) - 3.0 * (n + 1)) / tie


def kruskal_test(arrays: DecisionArrays, *, strategy: str, n_perm: int = 2000,
                 rng: np.random.Generator | None = None) -> TestResult | None:
    """Kruskal–Wallis H of the (measured) statistic across blueprints, with epsilon-squared."""
    stat = arrays.frame["statistic"].to_numpy(dtype=float)
    rows = (arrays.strategy_code == arrays.strategies.index(strategy)) & ~np.isnan(stat)
    bp = arrays.blueprint_code[rows]
    groups = [stat[rows][bp == j] for j in range(len(arrays.blueprints))]
    groups = [g for g in groups if g.size > 0]
    n = int(sum(g.size for g in groups))
    if len(groups) < 2 or n <= len(groups):
        return None
    if np.unique(np.concatenate(groups)).size == 1:
        return TestResult(name=KRUSKAL_NAME, method="none: every measured statistic is equal",
                          statistic=0.0, pvalue=1.0, effect_size=0.0,
                          effect_size_name="epsilon_squared", strategy=strategy,
                          n_units=arrays.n_replicates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = float(sps.kruskal(*groups).statistic)
    ranks = sps.rankdata(stat[rows])
    _, counts = np.unique(stat[rows], return_counts=True)
    tie = 1.0 - float((counts ** 3 - counts).sum()) / (n ** 3 - n)
    cells = _cells(arrays, np.flatnonzero(rows), np.stack([ranks, np.ones(n)], axis=1))
    rng = rng if rng is not None else np.random.default_rng(0)
    p = cell_permutation_pvalue(cells, lambda t: _kruskal_h(t[..., 0], t[..., 1], n, tie), h,
                                n_perm=n_perm, rng=rng)
    return TestResult(name=KRUSKAL_NAME,
                      method=f"Kruskal-Wallis H (tie-corrected), unmeasured statistics left out; "
                             f"p by {PERMUTATION} ({n_perm} permutations)",
                      statistic=h, pvalue=p, effect_size=h / (n - 1),
                      effect_size_name="epsilon_squared", strategy=strategy,
                      n_units=arrays.n_replicates, note=f"{n} measured seeds")
