"""Seed-paired tests with replicate-valid p-values: McNemar and Cochran's Q, clustered.

Seeds of one replicate share the host, the data order and (for calibrated strategies) the
threshold, so their paired outcomes err together; counting them as independent pairs
rejected a true null in 36% (McNemar) and 56% (Cochran's Q) of A/A tables with a replicate
effect. Here:

- **McNemar, clustered.** With ``d_r = n10_r - n01_r`` the discordance difference of replicate
  r, the statistic is Durkalski et al.'s ``X^2 = (sum_r d_r)^2 / sum_r d_r^2`` (Durkalski,
  Palesch, Lipsitz & Rust 2003, *Statistics in Medicine* 22:2417; with one seed per replicate
  it is the uncorrected McNemar chi-square). Its p-value is a sign-flip permutation over
  replicates (the two strategies swapped within a random set of replicates; all 2^R swaps
  when they fit), exact under exchangeability within replicates. The effect is the accuracy
  (or pass-rate) difference with a cluster-robust Wald CI.
- **Cochran's Q, clustered.** The statistic is Cochran's Q over the seeds judged by every
  strategy (as statsmodels computes it); its p-value permutes the strategy labels within
  each replicate (the same permutation for all seeds of the replicate).

:func:`mcnemar` and :func:`cochran_q` are the classical 2x2 / matrix versions, for reference.
"""

from __future__ import annotations

import numpy as np

from esper_ab.stats._counts import DecisionArrays
from esper_ab.stats._lazy import sps
from esper_ab.stats._resample import permutation_pvalue, sign_flips
from esper_ab.stats._results import TestResult

MCNEMAR_NAME = "correctness_mcnemar"
PASS_MCNEMAR_NAME = "blueprint_pass_mcnemar"
COCHRAN_NAME = "correctness_cochran_q"
EXACT_BELOW = 25  # the classical McNemar is exact (binomial) with fewer discordant pairs


def mcnemar(n10: int, n01: int, n: int, *, ci_level: float = 0.95) -> tuple[float, float, str, tuple[float, float], float]:
    """Classical McNemar on one paired 2x2 (seeds independent) with discordant counts n10
    (first only) and n01 (second only): exact binomial with fewer than 25 discordant pairs,
    else the continuity-corrected chi-square. Returns statistic, p, method, Wald CI and the
    difference in proportions (n10 − n01) / n."""
    d = n10 + n01
    diff = (n10 - n01) / n if n else float("nan")
    z = sps.norm.ppf(0.5 + ci_level / 2)
    se = np.sqrt(max(d - (n10 - n01) ** 2 / n, 0.0)) / n if n else float("nan")
    ci = (float(diff - z * se), float(diff + z * se))
    if d == 0:
        return 0.0, 1.0, "McNemar: no discordant pairs", ci, diff
    if d < EXACT_BELOW:
        k = min(n10, n01)
        p = min(1.0, 2.0 * float(sps.binom.cdf(k, d, 0.5)))
        return float(k), p, "McNemar exact (binomial, < 25 discordant pairs)", ci, diff
    stat = (abs(n10 - n01) - 1.0) ** 2 / d
    return float(stat), float(sps.chi2.sf(stat, 1)), "McNemar chi-square with continuity correction", ci, diff


def clustered_mcnemar(
    d: np.ndarray, n: np.ndarray, *, n_perm: int, rng: np.random.Generator, ci_level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Durkalski X^2, sign-flip p, difference and cluster-robust CI for G groups at once.

    ``d`` (R, G): per-replicate n10 − n01; ``n`` (R, G): pairs per replicate."""
    total, ss = d.sum(axis=0), (d * d).sum(axis=0)
    stat = np.where(ss > 0, total * total / np.where(ss > 0, ss, 1.0), 0.0)
    flips, exact = sign_flips(rng, n_perm, d.shape[0])
    perm = (1.0 - 2.0 * flips) @ d                       # (P, G) sums with signs flipped
    p = np.where(ss > 0, permutation_pvalue(total, perm, exact=exact), 1.0)
    n_tot = n.sum(axis=0)
    diff = np.where(n_tot > 0, total / np.where(n_tot > 0, n_tot, 1), np.nan)
    R = d.shape[0]
    resid = d - diff * n
    se = np.sqrt(R / max(R - 1, 1) * (resid * resid).sum(axis=0)) / np.where(n_tot > 0, n_tot, 1)
    z = float(sps.norm.ppf(0.5 + ci_level / 2))
    return stat, p, diff, diff - z * se, diff + z * se, exact


def _correct(arrays: DecisionArrays) -> tuple[np.ndarray, np.ndarray]:
    """(passed, correct) seed matrices (S, n_seeds), NaN where a strategy did not judge a seed."""
    passed = arrays.seed_matrix("passed")
    valuable = arrays.seed_matrix("valuable")
    correct = np.where(np.isnan(passed), np.nan, (passed == valuable).astype(float))
    return passed, correct


def _per_replicate(values: np.ndarray, rep: np.ndarray, group: np.ndarray, R: int, G: int) -> np.ndarray:
    out = np.zeros(R * G)
    np.add.at(out, rep * G + group, values)
    return out.reshape(R, G)


def mcnemar_tests(
    arrays: DecisionArrays, *, strategy: str, baseline: str, ci_level: float,
    n_perm: int = 2000, rng: np.random.Generator | None = None,
) -> list[TestResult]:
    """Clustered McNemar on per-seed correctness (strategy level) and on pass per blueprint.

    Seeds are paired on (replicate, blueprint, seed); seeds judged by only one of the two
    strategies are left out."""
    rng = rng if rng is not None else np.random.default_rng(0)
    s = arrays.strategies.index(strategy)
    b = arrays.strategies.index(baseline)
    passed, correct = _correct(arrays)
    both = ~np.isnan(passed[s]) & ~np.isnan(passed[b])
    if not both.any():
        return [TestResult(name=MCNEMAR_NAME, method="none: no seed judged by both strategies",
                           statistic=float("nan"), pvalue=float("nan"), strategy=strategy)]
    R, nb = arrays.n_replicates, len(arrays.blueprints)
    rep = arrays.seed_replicate[both]
    bp = arrays.seed_blueprint[both]
    cs, cb = correct[s, both] == 1, correct[b, both] == 1
    ps, pb = passed[s, both] == 1, passed[b, both] == 1
    zeros = np.zeros(rep.size, dtype=np.int64)
    d = np.concatenate([_per_replicate(cs.astype(float) - cb, rep, zeros, R, 1),
                        _per_replicate(ps.astype(float) - pb, rep, bp, R, nb)], axis=1)
    n = np.concatenate([_per_replicate(np.ones(rep.size), rep, zeros, R, 1),
                        _per_replicate(np.ones(rep.size), rep, bp, R, nb)], axis=1)
    used = n.sum(axis=1) > 0
    stat, p, diff, lo, hi, exact = clustered_mcnemar(d[used], n[used], n_perm=n_perm, rng=rng,
                                                     ci_level=ci_level)
    units = int(used.sum())
    how = ("clustered McNemar (Durkalski X^2 over replicates); p by sign flips over "
           + ("all 2^R swaps (exact)" if exact else f"{n_perm} random swap patterns"))
    n10, n01 = int((cs & ~cb).sum()), int((~cs & cb).sum())
    out = [TestResult(
        name=MCNEMAR_NAME, method=how + " on per-seed correctness (pass == valuable)",
        statistic=float(stat[0]), pvalue=float(p[0]), effect_size=float(diff[0]),
        effect_size_name="accuracy difference (strategy - baseline)",
        ci=(float(lo[0]), float(hi[0])), ci_level=ci_level, strategy=strategy, n_units=units,
        note=f"discordant: {n10} only strategy correct, {n01} only baseline correct, over "
             f"{int(both.sum())} seeds in {units} replicates")]
    for j, name in enumerate(arrays.blueprints):
        if n[:, 1 + j].sum() == 0:
            continue
        out.append(TestResult(
            name=PASS_MCNEMAR_NAME, method=how + " on pass", statistic=float(stat[1 + j]),
            pvalue=float(p[1 + j]), effect_size=float(diff[1 + j]),
            effect_size_name="pass-rate difference (strategy - baseline)",
            ci=(float(lo[1 + j]), float(hi[1 + j])), ci_level=ci_level, strategy=strategy,
            blueprint=name, n_units=units))
    return out


def cochran_q(x: np.ndarray) -> tuple[float, float]:
    """Classical Cochran's Q for a (units × treatments) 0/1 matrix, chi-square p (units
    independent); (0, 1) when no row varies."""
    x = np.asarray(x, dtype=float)
    k = x.shape[1]
    col = x.sum(axis=0)
    row = x.sum(axis=1)
    total = row.sum()
    den = k * total - (row**2).sum()
    if den <= 0:
        return 0.0, 1.0
    q = (k - 1) * (k * (col**2).sum() - total**2) / den
    return float(q), float(sps.chi2.sf(q, k - 1))


def cochran_test(arrays: DecisionArrays, *, n_perm: int = 2000,
                 rng: np.random.Generator | None = None) -> TestResult | None:
    """Cochran's Q of per-seed correctness across ≥ 3 strategies (seeds judged by all), p by
    permuting strategy labels within replicates."""
    k = len(arrays.strategies)
    if k < 3:
        return None
    _, correct = _correct(arrays)
    all_judged = ~np.isnan(correct).any(axis=0)
    x = correct[:, all_judged].T
    if len(x) == 0:
        return None
    q, _ = cochran_q(x)
    rep = arrays.seed_replicate[all_judged]
    R = arrays.n_replicates
    c = np.zeros((R, k))
    np.add.at(c, rep, x)
    c = c[np.bincount(rep, minlength=R) > 0]
    observed = float((c.sum(axis=0) ** 2).sum())
    rng = rng if rng is not None else np.random.default_rng(0)
    hits = 0
    for start in range(0, n_perm, 500):
        m = min(500, n_perm - start)
        perm = np.argsort(rng.random((m, c.shape[0], k)), axis=-1)
        totals = np.take_along_axis(np.broadcast_to(c, perm.shape), perm, axis=-1).sum(axis=1)
        hits += int(((totals ** 2).sum(axis=-1) >= observed * (1 - 1e-9) - 1e-12).sum())
    p = 1.0 if q == 0 else (1 + hits) / (1 + n_perm)
    return TestResult(
        name=COCHRAN_NAME,
        method=f"Cochran's Q across {k} strategies on per-seed correctness; p by permuting "
               f"strategy labels within replicates ({n_perm} permutations)",
        statistic=q, pvalue=p, effect_size=q / (len(x) * (k - 1)),
        effect_size_name="Q / (n (k - 1))", n_units=int(c.shape[0]),
        note=f"{len(x)} seeds judged by every strategy")
