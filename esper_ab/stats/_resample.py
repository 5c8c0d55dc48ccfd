"""Seeded resampling over replicates: bootstrap weights, sign flips, CIs and p-values."""

from __future__ import annotations

import numpy as np

from esper_ab.stats._lazy import special

# Relative tolerance when comparing a permuted statistic with the observed one, so that
# exact ties (which are common for discrete statistics) are not broken by rounding noise.
_TIE_RTOL = 1e-9


def bootstrap_weights(rng: np.random.Generator, n_boot: int, n_units: int) -> np.ndarray:
    """(n_boot, n_units) multiplicities of a with-replacement resample of the units."""
    probs = np.full(n_units, 1.0 / n_units)
    return rng.multinomial(n_units, probs, size=n_boot).astype(float)


def sign_flips(rng: np.random.Generator, n_perm: int, n_units: int) -> tuple[np.ndarray, bool]:
    """Swap indicators (P, n_units) for a paired label-swap test, and whether they are exact.

    When all 2**n_units patterns fit in ``n_perm`` they are enumerated (an exact test, the
    identity included); otherwise ``n_perm`` random patterns are drawn.
    """
    if n_units <= 30 and 2**n_units <= n_perm:
        codes = np.arange(2**n_units, dtype=np.int64)[:, None]
        bits = (codes >> np.arange(n_units, dtype=np.int64)[None, :]) & 1
        return bits.astype(bool), True
    return rng.random((n_perm, n_units)) < 0.5, False


def permutation_pvalue(observed: np.ndarray, permuted: np.ndarray, *, exact: bool) -> np.ndarray:
    """Two-sided p-value P(|T*| >= |T|) with permutations on axis 0.

    Monte Carlo p-values count the observed arrangement once more ((1 + k) / (1 + P)), which
    keeps the test valid; NaN permuted values are dropped; NaN observed gives NaN.
    """
    obs = np.abs(np.asarray(observed, dtype=float))
    perm = np.abs(np.asarray(permuted, dtype=float))
    valid = ~np.isnan(perm)
    extreme = valid & (perm >= obs * (1 - _TIE_RTOL) - 1e-12)
    k = extreme.sum(axis=0)
    m = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m if exact else (1 + k) / (1 + m)
    return np.where(np.isnan(obs) | (m == 0), np.nan, np.minimum(p, 1.0))


def permutation_pvalue_greater(observed: np.ndarray, permuted: np.ndarray, *, exact: bool) -> np.ndarray:
    """One-sided p-value P(T* >= T) with permutations on axis 0 (conventions as
    :func:`permutation_pvalue`)."""
    obs = np.asarray(observed, dtype=float)
    perm = np.asarray(permuted, dtype=float)
    valid = ~np.isnan(perm)
    extreme = valid & (perm >= obs - _TIE_RTOL * np.abs(obs) - 1e-12)
    k = extreme.sum(axis=0)
    m = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m if exact else (1 + k) / (1 + m)
    return np.where(np.isnan(obs) | (m == 0), np.nan, np.minimum(p, 1.0))


def nan_sd(x: np.ndarray) -> np.ndarray:
    """Sample SD (ddof 1) over axis 0 ignoring NaN; NaN with fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    n = ok.sum(axis=0)
    z = np.where(ok, x, 0.0)
    mean = z.sum(axis=0) / np.maximum(n, 1)
    ss = (np.where(ok, x - mean, 0.0) ** 2).sum(axis=0)
    return np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def jackknife_weights(n_units: int) -> np.ndarray:
    """(n_units, n_units) leave-one-unit-out multiplicities."""
    return np.ones((n_units, n_units)) - np.eye(n_units)


def _quantile_along0(sorted_vals: np.ndarray, n_valid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantile q (per element) of the first n_valid sorted values."""
    pos = q * np.maximum(n_valid - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n_valid - 1, 0))
    frac = pos - lo
    v_lo = np.take_along_axis(sorted_vals, lo[None, ...], axis=0)[0]
    v_hi = np.take_along_axis(sorted_vals, hi[None, ...], axis=0)[0]
    return v_lo + frac * (v_hi - v_lo)


def bca_ci(
    point: np.ndarray, boot: np.ndarray, jack: np.ndarray, level: float, *, min_valid: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated (BCa) bootstrap CI, elementwise over trailing axes.

    ``boot`` (B, ...) holds resampled values of the statistic whose estimate is ``point``;
    ``jack`` (J, ...) its leave-one-unit-out values (for the acceleration). Bias correction
    counts ties with the estimate as one half. NaN resamples are ignored; the CI is NaN when
    fewer than ``min_valid`` of them are defined or the estimate is NaN.
    """
    point = np.asarray(point, dtype=float)
    boot = np.asarray(boot, dtype=float)
    if boot.shape[0] == 0:
        return np.full(point.shape, np.nan), np.full(point.shape, np.nan)
    valid = ~np.isnan(boot)
    n_valid = valid.sum(axis=0)
    below = (valid & (boot < point)).sum(axis=0) + 0.5 * (valid & (boot == point)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prop = below / n_valid
    prop = np.clip(np.nan_to_num(prop, nan=0.5), 0.5 / np.maximum(n_valid, 1),
                   1 - 0.5 / np.maximum(n_valid, 1))
    z0 = _norm_ppf(prop)
    jack = np.asarray(jack, dtype=float)
    accel = np.zeros(point.shape)
    if jack.shape[0] >= 3:
        with np.errstate(invalid="ignore", divide="ignore"):
            d = jack.mean(axis=0) - jack  # NaN anywhere → NaN → no acceleration
            ss = (d**2).sum(axis=0)
            ok = (ss > 0) & ~np.isnan(ss)
            accel = np.where(ok, (d**3).sum(axis=0) / (6.0 * np.where(ok, ss, 1.0) ** 1.5), 0.0)
    tail = (1.0 - level) / 2.0
    sorted_vals = np.sort(boot, axis=0)  # NaN sorts last
    out = []
    for q in (tail, 1.0 - tail):
        zq = _norm_ppf(np.full(point.shape, q))
        num = z0 + zq
        with np.errstate(invalid="ignore", divide="ignore"):
            adj = _norm_cdf(z0 + num / (1.0 - accel * num))
        adj = np.clip(np.nan_to_num(adj, nan=q), 0.0, 1.0)
        out.append(_quantile_along0(sorted_vals, n_valid, adj))
    bad = np.isnan(point) | (n_valid < min_valid * boot.shape[0]) | (n_valid == 0)
    return np.where(bad, np.nan, out[0]), np.where(bad, np.nan, out[1])


def percentile_ci(boot: np.ndarray, level: float, *, min_valid: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI over axis 0 (NaN resamples ignored)."""
    boot = np.asarray(boot, dtype=float)
    shape = boot.shape[1:]
    if boot.shape[0] == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    valid = ~np.isnan(boot)
    n_valid = valid.sum(axis=0)
    sorted_vals = np.sort(boot, axis=0)
    tail = (1.0 - level) / 2.0
    lo = _quantile_along0(sorted_vals, n_valid, np.full(shape, tail))
    hi = _quantile_along0(sorted_vals, n_valid, np.full(shape, 1.0 - tail))
    bad = (n_valid < min_valid * boot.shape[0]) | (n_valid == 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def bootstrap_ci(
    point: np.ndarray, boot: np.ndarray, jack: np.ndarray, level: float, *, smooth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """BCa where ``smooth`` (broadcast over trailing axes) is True, percentile elsewhere.

    The max − min disparities are not smooth functions of the data: when blueprints nearly tie
    at an extreme, the estimate sits at the bottom of its bootstrap distribution and BCa's bias
    correction collapses the interval onto it. Their percentile interval errs upward instead,
    which never certifies a small gap too early.
    """
    b_lo, b_hi = bca_ci(point, boot, jack, level)
    p_lo, p_hi = percentile_ci(boot, level)
    if np.isnan(point).all() and boot.shape[0] == 0:
        return b_lo, b_hi
    smooth = np.broadcast_to(smooth, b_lo.shape)
    p_lo = np.where(np.isnan(point), np.nan, p_lo)
    p_hi = np.where(np.isnan(point), np.nan, p_hi)
    return np.where(smooth, b_lo, p_lo), np.where(smooth, b_hi, p_hi)


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    return special.ndtri(p)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return special.ndtr(x)
