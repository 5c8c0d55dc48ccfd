"""The verdict's fairness criterion: per-blueprint rates where estimable, gaps debiased by
empirical-Bayes shrinkage, a paired test against the baseline.

Why: the max − min over blueprints of *noisy* per-blueprint rates is biased upward. For a gate
with the same TPR and FPR in every blueprint it is about 2.8 standard errors at 8 blueprints
(the expected range of 8 normals), so a truly fair gate fails a 0.2 bound at 30 seeds per
class. The bias grows with the number of blueprints and shrinks with the seeds per blueprint.

Method, for each rate (TPR = P(pass | valuable), FPR = P(pass | not valuable), pass rate) and
each strategy:

1. **Eligibility, rate by rate.** A blueprint enters TPR parity with at least
   ``min_valuable`` valuable seeds, and FPR parity with at least ``min_non_valuable``
   non-valuable seeds: every rate that is defined enters, and the two sets may differ (a
   blueprint whose seeds are all non-valuable still enters FPR parity, so a gate that passes
   one blueprint's useless seeds always and another's never is seen). Every blueprint with a
   seed enters the pass rate. :meth:`FairnessTable.rates_entered` names the rates each
   blueprint enters; :meth:`FairnessTable.left_out` the blueprints a metric leaves out.
2. **Rates and their variance.** ``r_b = sum_r x_rb / sum_r n_rb`` over replicates r, with the
   cluster-robust (linearization, ratio-estimator) variance ``v_b = R/(R-1) sum_r (x_rb - r_b
   n_rb)^2 / (sum_r n_rb)^2``, so seeds sharing a replicate are not counted as independent;
   ``v_b`` is floored at the binomial variance at the Laplace rate (x+1)/(n+2), so a rate of
   exactly 0 or 1 is not taken as certain.
3. **Configuration.** The between-blueprint variance tau^2 of the true rates is estimated by
   the DerSimonian–Laird moment estimator (DerSimonian & Laird 1986, Controlled Clinical
   Trials 7:177) and each rate by its empirical-Bayes posterior mean ``mu + tau^2 / (tau^2 +
   v_b) (r_b - mu)`` (Efron & Morris 1975, JASA 70:311; Morris 1983, JASA 78:47): a plausible
   set of true rates, all equal when the blueprints differ no more than noise explains.
4. **Bias correction.** ``debiased = clip(raw - bias, 0, 1)``, where ``raw`` is the max − min of
   the observed rates and ``bias = E[max − min of N(shrunk_b, v_b)] − (max − min of
   shrunk_b)`` is the bias of the range estimator at that configuration: a parametric
   bootstrap bias correction (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*,
   ch. 10) centred on the shrunk rates rather than the noisy ones and computed exactly by
   numerical integration, no resampling. For a fair gate the correction is the mean of the
   range's null distribution; for a gate with well separated blueprints it is small. The
   equalized-odds gap is the larger of the debiased TPR and FPR gaps. Its CI is the estimate
   ± z times the SD of the whole procedure over a cluster bootstrap of replicates.
5. **Paired test.** "No less fair than the baseline": a sign-flip permutation over replicates
   (strategy and baseline swapped in a random set of replicates). Its statistic is the raw
   gap of the strategy minus the baseline's, on the same blueprints (their noise biases
   cancel under the null, and the raw gap is cheap to recompute); one-sided p for "the
   strategy is less fair". The effect reported beside it is the debiased difference.

Measured (8 blueprints x 60 replicates, one seed per cell, about 30 seeds per class and
blueprint, 300 simulated tables): a fair gate (TPR 0.8, FPR 0.2 everywhere) has a raw TPR gap
of 0.227 on average and a debiased gap of 0.064 (0 in 42% of tables); a gap of 0.35 split
between two halves of the blueprints is estimated at 0.40, a single blueprint 0.35 below
the others at 0.37.

Every quantity is a function of per-replicate counts (and their squares), so bootstrap and
permutation are weighted sums over the replicate axis (``weights @ moments``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from esper_ab.stats._counts import FALSE_POS, PASSED, TRUE_POS, VALUABLE, N
from esper_ab.stats._lazy import special
from esper_ab.stats._resample import nan_sd, permutation_pvalue_greater, sign_flips

FAIRNESS_METRICS: tuple[str, ...] = ("equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap")
RATES: tuple[str, ...] = ("pass_rate", "tpr", "fpr")
_X, _D, _XX, _XD, _DD = range(5)


def rate_moments(counts: np.ndarray) -> np.ndarray:
    """Per-replicate moments (R, S, B, 3 rates, 5): numerator x, denominator n, x², x n, n²."""
    n, v = counts[..., N], counts[..., VALUABLE]
    x = np.stack([counts[..., PASSED], counts[..., TRUE_POS], counts[..., FALSE_POS]], axis=-1)
    d = np.stack([n, v, n - v], axis=-1)
    return np.stack([x, d, x * x, x * d, d * d], axis=-1)


def weighted(weights: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Moments summed over replicates with weights (W, R) → (W, S, B, 3, 5)."""
    R = moments.shape[0]
    return (weights @ moments.reshape(R, -1)).reshape((weights.shape[0],) + moments.shape[1:])


def rate_stats(m: np.ndarray, eligible: np.ndarray, n_rep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rates, variances, mask) from summed moments (..., B, 3, 5) and an eligibility mask
    broadcastable to (..., B, 3); rates are NaN outside the mask (variance 1 there)."""
    x, d = m[..., _X], m[..., _D]
    ok = eligible & (d > 0)
    dd = np.where(ok, d, 1.0)
    r = np.where(ok, x / dd, np.nan)
    rr = np.where(ok, r, 0.0)
    c = n_rep / max(n_rep - 1, 1)
    v_cluster = c * (m[..., _XX] - 2 * rr * m[..., _XD] + rr * rr * m[..., _DD]) / (dd * dd)
    lap = (x + 1.0) / (d + 2.0)
    v = np.where(ok, np.maximum(v_cluster, lap * (1 - lap) / dd), 1.0)
    return r, v, ok


def shrink(r: np.ndarray, v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Empirical-Bayes posterior means over the blueprint axis (-2), DerSimonian–Laird tau^2."""
    rr = np.where(ok, r, 0.0)
    w = np.where(ok, 1.0 / v, 0.0)
    k = ok.sum(axis=-2)
    sw = w.sum(axis=-2)
    safe = np.where(sw > 0, sw, 1.0)
    rbar = (w * rr).sum(axis=-2) / safe
    q = (w * (rr - rbar[..., None, :]) ** 2).sum(axis=-2)
    cden = sw - (w * w).sum(axis=-2) / safe
    tau2 = np.where((k >= 2) & (cden > 0),
                    np.maximum(0.0, (q - (k - 1)) / np.where(cden > 0, cden, 1.0)), 0.0)
    t2 = tau2[..., None, :]
    ws = np.where(ok, 1.0 / (v + t2), 0.0)
    sws = ws.sum(axis=-2)
    mu = ((ws * rr).sum(axis=-2) / np.where(sws > 0, sws, 1.0))[..., None, :]
    return np.where(ok, mu + t2 / (t2 + v) * (rr - mu), np.nan)


def _range(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    hi = np.max(np.where(ok, x, -np.inf), axis=-2)
    lo = np.min(np.where(ok, x, np.inf), axis=-2)
    return np.where(ok.sum(axis=-2) >= 2, hi - lo, np.nan)


def expected_range(mu: np.ndarray, sd: np.ndarray, ok: np.ndarray, *, grid: int = 32) -> np.ndarray:
    """E[max − min] of independent N(mu_b, sd_b²) over the ``ok`` entries of the last axis:
    the integral of P(max > t) − P(min > t) over t, by the trapezoid rule on [min(mu − 6 sd),
    max(mu + 6 sd)] (within 2e-4 of Monte Carlo on rate-like inputs)."""
    lo = np.min(np.where(ok, mu - 6 * sd, np.inf), axis=-1)
    hi = np.max(np.where(ok, mu + 6 * sd, -np.inf), axis=-1)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    t = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, grid)   # (..., G)
    z = (t[..., :, None] - np.where(ok, mu, 0.0)[..., None, :]) / np.where(ok, sd, 1.0)[..., None, :]
    cdf = special.ndtr(z)
    below = np.where(ok[..., None, :], cdf, 1.0).prod(axis=-1)       # P(max <= t)
    above = np.where(ok[..., None, :], 1.0 - cdf, 1.0).prod(axis=-1)  # P(min > t)
    return np.trapezoid((1.0 - below) - above, t, axis=-1)


def _metrics(rate_gaps: np.ndarray) -> np.ndarray:
    """(..., 3 rates) gaps → (..., 3 FAIRNESS_METRICS)."""
    p, t, f = rate_gaps[..., 0], rate_gaps[..., 1], rate_gaps[..., 2]
    eo = np.where(np.isnan(t), f, np.where(np.isnan(f), t, np.maximum(t, f)))
    return np.stack([eo, t, p], axis=-1)


def raw_gaps(m: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Raw max − min gaps (..., 3 FAIRNESS_METRICS) on the eligible blueprints."""
    d = m[..., _D]
    ok = eligible & (d > 0)
    r = np.where(ok, m[..., _X] / np.where(ok, d, 1.0), np.nan)
    return _metrics(_range(r, ok))


def fairness_gaps(m: np.ndarray, eligible: np.ndarray, n_rep: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw, debiased) gaps (..., 3 FAIRNESS_METRICS) from summed moments (..., B, 3, 5)."""
    r, v, ok = rate_stats(m, eligible, n_rep)
    shrunk = shrink(r, v, ok)
    raw = _range(r, ok)
    swap = lambda a: np.moveaxis(a, -1, -2)  # noqa: E731  (rates first, blueprints last)
    bias = expected_range(swap(np.where(ok, shrunk, 0.0)), np.sqrt(swap(v)), swap(ok)) \
        - np.nan_to_num(_range(shrunk, ok))
    # In [0, 1] like the rates: the bias is >= 0 in exact arithmetic (Jensen), but its
    # numerical integration can land a hair below 0 when the raw gap is already 1.
    debiased = np.where(np.isnan(raw), np.nan, np.clip(raw - bias, 0.0, 1.0))
    return _metrics(raw), _metrics(debiased)


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields explicitly
class FairnessTable:
    """The fairness criterion of every strategy (see the module docstring).

    ``table`` (index strategy) has, for each metric of ``FAIRNESS_METRICS``: ``<m>`` (debiased),
    ``<m>_ci_low``/``<m>_ci_high`` (estimate ± z bootstrap SD), ``<m>_se`` (that SD; the
    verdict builds its own (1 − 2 alpha) interval from it), ``<m>_raw`` and, for every
    strategy but the baseline, ``<m>_vs_baseline`` (debiased difference),
    ``<m>_raw_vs_baseline`` (raw difference, the test statistic) and ``<m>_vs_baseline_p``
    (one-sided sign-flip p for "less fair than the baseline").
    ``rates`` holds the raw and shrunk per-blueprint rates. ``eligible`` is a blueprint ×
    {tpr, fpr, pass_rate} mask; ``reasons`` says why a blueprint is left out.
    """

    table: pd.DataFrame
    rates: pd.DataFrame
    eligible: pd.DataFrame
    reasons: dict[str, str]
    min_valuable: int
    min_non_valuable: int
    n_boot: int
    n_perm: int
    ci_level: float = 0.95

    def rates_entered(self, metric: str = "equalized_odds_gap") -> dict[str, tuple[str, ...]]:
        """The rates each blueprint enters in ``metric`` (TPR, FPR or pass rate)."""
        rates = {"equalized_odds_gap": ("tpr", "fpr"), "equal_opportunity_gap": ("tpr",),
                 "pass_rate_gap": ("pass_rate",)}[metric]
        return {str(b): tuple(r for r in rates if bool(self.eligible.loc[b, r]))
                for b in self.eligible.index}

    def left_out(self, metric: str = "equalized_odds_gap") -> dict[str, str]:
        """Blueprints the metric leaves out entirely (no rate of theirs enters), with the reason."""
        entered = self.rates_entered(metric)
        return {b: self.reasons.get(b, "no seed") for b, r in entered.items() if not r}

    def left_out_text(self, metric: str = "equalized_odds_gap") -> str:
        """Which rates each blueprint enters, e.g. ``TPR and FPR: a, b; FPR only: c (2
        valuable seed(s) < min_valuable 10)``, or ``no blueprint left out``."""
        entered = self.rates_entered(metric)
        if metric == "pass_rate_gap" or all(len(r) == 2 for r in entered.values()) \
                or metric == "equal_opportunity_gap" and all(entered.values()):
            out = self.left_out(metric)
            if not out:
                return "no blueprint left out"
            return "left out: " + "; ".join(f"{b} ({r})" for b, r in out.items())
        groups: dict[tuple[str, ...], list[str]] = {}
        for b, r in entered.items():
            groups.setdefault(r, []).append(b)
        label = {("tpr", "fpr"): "TPR and FPR", ("tpr",): "TPR only", ("fpr",): "FPR only",
                 (): "left out"}
        parts = []
        for key in (("tpr", "fpr"), ("tpr",), ("fpr",), ()):
            if key in groups:
                names = ", ".join(b if len(key) == 2 else f"{b} ({self.reasons.get(b, 'no seed')})"
                                  for b in groups[key])
                parts.append(f"{label[key]}: {names}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        def num(v: object) -> object:
            return None if isinstance(v, float) and not np.isfinite(v) else v

        per = {}
        for s, row in self.table.iterrows():
            per[str(s)] = {k: num(float(v)) for k, v in row.items()}
        return {"method": "empirical-Bayes shrinkage of per-blueprint rates (DerSimonian-Laird "
                          "tau^2), cluster-robust variances over replicates",
                "min_valuable": self.min_valuable, "min_non_valuable": self.min_non_valuable,
                "left_out": {m: self.left_out(m) for m in FAIRNESS_METRICS},
                "rates_entered": {m: {b: list(r) for b, r in self.rates_entered(m).items()}
                                  for m in FAIRNESS_METRICS},
                "strategies": per}


def eligibility(counts: np.ndarray, blueprints: tuple[str, ...], *, min_valuable: int,
                min_non_valuable: int) -> tuple[np.ndarray, dict[str, str]]:
    """(B, 3) mask over (pass_rate, tpr, fpr) and the reason per left-out blueprint.

    Counts are the seeds of each blueprint, the fewest over strategies (a paired design
    judges the same seeds with every strategy)."""
    tot = counts.sum(axis=0)                       # (S, B, K)
    n = tot[..., N].min(axis=0)
    val = tot[..., VALUABLE].min(axis=0)
    nonval = (tot[..., N] - tot[..., VALUABLE]).min(axis=0)
    mask = np.stack([n > 0, val >= min_valuable, nonval >= min_non_valuable], axis=-1)
    reasons = {}
    for j, b in enumerate(blueprints):
        why = []
        if val[j] < min_valuable:
            why.append(f"{int(val[j])} valuable seed(s) < min_valuable {min_valuable}")
        if nonval[j] < min_non_valuable:
            why.append(f"{int(nonval[j])} non-valuable seed(s) < min_non_valuable "
                       f"{min_non_valuable}")
        if why:
            reasons[str(b)] = "; ".join(why)
    return mask, reasons


def normal_ci(point: np.ndarray, boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """point ± z * (bootstrap SD), clipped to the gap's range [0, 1].

    A percentile interval of a bias-corrected max − min sits too high (each resample adds
    its own noise to the range), so the interval is centred on the estimate instead."""
    se = nan_sd(boot)
    z = float(special.ndtri(0.5 + level / 2))
    return np.clip(point - z * se, 0.0, 1.0), np.clip(point + z * se, 0.0, 1.0)


def fairness_table(
    counts: np.ndarray, *, strategies: tuple[str, ...], blueprints: tuple[str, ...],
    baseline: str, min_valuable: int, min_non_valuable: int, weights: np.ndarray,
    n_perm: int, ci_level: float, rng: np.random.Generator,
) -> FairnessTable:
    """The fairness criterion for every strategy of a count array (R, S, B, K); ``weights``
    (W, R) are the cluster-bootstrap multiplicities of the CIs."""
    R = counts.shape[0]
    mask, reasons = eligibility(counts, blueprints, min_valuable=min_valuable,
                                min_non_valuable=min_non_valuable)
    mom = rate_moments(counts)                     # (R, S, B, 3, 5)
    total = mom.sum(axis=0)
    raw, deb = fairness_gaps(total, mask, R)       # (S, 3)
    _, boot = fairness_gaps(weighted(weights, mom), mask, R)
    lo, hi = normal_ci(deb, boot, ci_level)
    se = nan_sd(boot)
    S = len(strategies)
    data: dict[str, np.ndarray] = {}
    for j, name in enumerate(FAIRNESS_METRICS):
        data[name] = deb[:, j]
        data[f"{name}_ci_low"] = np.where(np.isnan(deb[:, j]), np.nan, lo[:, j])
        data[f"{name}_ci_high"] = np.where(np.isnan(deb[:, j]), np.nan, hi[:, j])
        data[f"{name}_se"] = np.where(np.isnan(deb[:, j]), np.nan, se[:, j])
        data[f"{name}_raw"] = raw[:, j]
        for col in ("vs_baseline", "raw_vs_baseline", "vs_baseline_p"):
            data[f"{name}_{col}"] = np.full(S, np.nan)
    b = strategies.index(baseline)
    for s in range(S):
        if s == b:
            continue
        raw_diff, p = paired_fairness_test(mom[:, [s, b]], mask, n_perm=n_perm, rng=rng)
        for j, name in enumerate(FAIRNESS_METRICS):
            data[f"{name}_vs_baseline"][s] = deb[s, j] - deb[b, j]
            data[f"{name}_raw_vs_baseline"][s] = raw_diff[j]
            data[f"{name}_vs_baseline_p"][s] = p[j]
    table = pd.DataFrame(data, index=pd.Index(strategies, name="strategy"))
    r, v, ok = rate_stats(total, mask, R)
    shrunk = shrink(r, v, ok)
    idx = pd.MultiIndex.from_product([strategies, blueprints], names=["strategy", "blueprint"])
    rates = pd.DataFrame(
        {f"{k}_{name}": arr[..., i].reshape(-1) for i, name in enumerate(RATES)
         for k, arr in (("raw", r), ("shrunk", shrunk))}, index=idx)
    elig = pd.DataFrame(mask, index=pd.Index(blueprints, name="blueprint"), columns=list(RATES))
    return FairnessTable(table=table, rates=rates, eligible=elig, reasons=reasons,
                         min_valuable=min_valuable, min_non_valuable=min_non_valuable,
                         n_boot=int(weights.shape[0]), n_perm=n_perm, ci_level=ci_level)


def paired_fairness_test(
    pair: np.ndarray, mask: np.ndarray, *, n_perm: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Raw gap difference (strategy − baseline, 3 FAIRNESS_METRICS) and its one-sided
    sign-flip p-value ("the strategy is less fair") from moments (R, 2, B, 3, 5) of the pair;
    replicates in which either strategy judged no seed are left out."""
    judged = (pair[..., 0, _D].sum(axis=-1) > 0).all(axis=1)
    pair = pair[judged]
    R = pair.shape[0]
    if R < 2:
        return np.full(3, np.nan), np.full(3, np.nan)
    gaps = raw_gaps(pair.sum(axis=0), mask)
    observed = gaps[0] - gaps[1]
    flips, exact = sign_flips(rng, n_perm, R)
    f = flips.astype(float)
    flat = pair.reshape(R, 2, -1)
    s_sw = ((1 - f) @ flat[:, 0] + f @ flat[:, 1]).reshape((-1,) + pair.shape[2:])
    b_sw = (f @ flat[:, 0] + (1 - f) @ flat[:, 1]).reshape((-1,) + pair.shape[2:])
    perm = raw_gaps(s_sw, mask) - raw_gaps(b_sw, mask)
    return observed, permutation_pvalue_greater(observed, perm, exact=exact)
