"""Gradient-ratio strategies: raw, baseline, exponent, mean_abs, per_layer_type."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from esper_ab.gradients import LAYER_TYPES
from esper_ab.strategies._base import (
    HOST_EPS,
    NOT_APPLICABLE,
    UNMEASURED,
    VALUE,
    ContextBatch,
    ParamSpec,
    R,
    StatisticBatch,
    StatsBatch,
    Strategy,
)

RATIO_THRESHOLD = ParamSpec("threshold", "float", 0.10, low=1e-3, high=10.0, log=True,
                            domain=(0.0, float("inf")),
                            doc="pass when the statistic >= threshold")
LEGACY = ParamSpec("legacy_edge_cases", "bool", False,
                   doc="esper-lite semantics: host norm < 1e-8 gives 0, a zero-parameter "
                       "seed falls back to the raw ratio, a seed with no gradient gives 0")
_EMB = LAYER_TYPES.index("embedding")


# -- derived columns of large batches ----------------------------------------------------
# The replay engine passes the same (seed, host) batches -- a whole trace -- to every config
# of a sweep; what does not depend on a strategy parameter (the edge-case checks, R0, the
# parameter-count ratio) is computed once per batch and kept while the batch lives. Small
# batches (the online gate: one epoch of one seed) are computed afresh: the values are the
# same either way, since each is the same elementwise numpy expression.
_MEMO_MIN_ROWS = 4096
_memos: dict[int, dict] = {}


def _memo(batch: StatsBatch, key: tuple, make):
    if len(batch) < _MEMO_MIN_ROWS:
        return make()
    memo = _memos.get(id(batch))
    if memo is None:
        memo = _memos[id(batch)] = {}
        weakref.finalize(batch, _memos.pop, id(batch), None)
    if key not in memo:
        value = make()
        for a in value if isinstance(value, tuple) else (value,):
            if isinstance(a, np.ndarray):
                a.flags.writeable = False   # shared by every later call: never mutated
        memo[key] = value
    return memo[key]


def _pair_key(seed: StatsBatch, host: StatsBatch, name: str, *extra) -> tuple:
    """A memo key of ``seed``'s memo for a column derived from (seed, host); the memo keeps
    ``host`` alive, so its id cannot be reused while the entry exists."""
    _memo(seed, ("host", id(host)), lambda: host)
    return (name, id(host), *extra)


def gradient_checks(seed: StatsBatch, host: StatsBatch, *, legacy: bool = False,
                    host_l2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Edge cases of DOMAIN.md §6 as (state, reason) arrays; VALUE/ok rows get computed.

    Precedence: zero-parameter seed, no seed gradient, non-finite seed, non-finite host,
    host norm ~ 0, dead seed (measured, exactly zero: a value of 0, flagged).
    """
    n = len(seed)
    state = np.full(n, VALUE, dtype=np.int8)
    reason = np.full(n, R["ok"], dtype=np.int8)
    open_ = np.ones(n, dtype=bool)
    host_l2 = host.total_l2 if host_l2 is None else host_l2

    def mark(mask: np.ndarray, st: int, why: str) -> None:
        m = open_ & mask
        state[m] = st
        reason[m] = R[why]
        open_[m] = False

    if legacy:
        mark(seed.numel == 0, VALUE, "legacy_zero_param")
        mark(seed.n_with_grad == 0, VALUE, "no_seed_gradient")
    else:
        mark(seed.numel == 0, NOT_APPLICABLE, "zero_param_seed")
        mark(seed.n_with_grad == 0, UNMEASURED, "no_seed_gradient")
    finite_seed = (seed.n_nonfinite == 0) & np.isfinite(seed.sum_sq) & np.isfinite(seed.sum_abs)
    finite_host = (host.n_nonfinite == 0) & np.isfinite(host.sum_sq) & np.isfinite(host.sum_abs)
    mark(~finite_seed, UNMEASURED, "nonfinite_seed")
    mark(~finite_host, UNMEASURED, "nonfinite_host")
    host_zero = (host.n_with_grad == 0) | ~(host_l2 >= HOST_EPS)
    mark(host_zero, VALUE if legacy else UNMEASURED,
         "legacy_host_norm_zero" if legacy else "host_norm_zero")
    mark(seed.sum_abs == 0, VALUE, "dead_seed")
    return state, reason


@dataclass(frozen=True)
class _Checks:
    """The edge-case checks of one (seed, host) batch and what ``finish`` derives from them."""

    state: np.ndarray
    reason: np.ndarray
    ok: np.ndarray        # reason == ok: the computed value is kept
    fill: np.ndarray      # the value of every other row: 0 (zero-valued edge cases) or NaN


def _checks(seed: StatsBatch, host: StatsBatch, *, legacy: bool = False,
            host_l2: np.ndarray | None = None, ref: str = "host") -> _Checks:
    """``gradient_checks`` (memoized per batch; ``ref`` names the ``host_l2`` variant)."""
    def make() -> _Checks:
        state, reason = gradient_checks(seed, host, legacy=legacy, host_l2=host_l2)
        ok = reason == R["ok"]
        zero = (state == VALUE) & ~ok
        return _Checks(state, reason, ok, np.where(zero, 0.0, np.nan))

    return _memo(seed, _pair_key(seed, host, "checks", legacy, ref), make)


def finish(raw: np.ndarray, state: np.ndarray, reason: np.ndarray,
           checks: _Checks | None = None) -> StatisticBatch:
    """Fill values: computed where ok, 0 for the zero-valued edge cases, NaN elsewhere."""
    if checks is None:
        ok = reason == R["ok"]
        fill = np.where((state == VALUE) & ~ok, 0.0, np.nan)
    else:
        ok, fill = checks.ok, checks.fill
    value = np.where(ok, raw, fill)
    # A computed value that still came out non-finite (overflow) is unmeasured.
    bad = ok & ~np.isfinite(value)
    if bad.any():
        state = np.where(bad, UNMEASURED, state).astype(np.int8)
        reason = np.where(bad, R["nonfinite_seed"], reason).astype(np.int8)
        value = np.where(bad, np.nan, value)
    return StatisticBatch(value=value.astype(np.float64, copy=False), state=state,
                          reason=reason)


class _RatioStrategy(Strategy):
    THRESHOLD = RATIO_THRESHOLD
    PARAMS = (LEGACY,)

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        checks = _checks(seed, host, legacy=self.params["legacy_edge_cases"])
        return finish(self._formula(seed, host), checks.state, checks.reason, checks)

    def _formula(self, seed: StatsBatch, host: StatsBatch) -> np.ndarray:
        raise NotImplementedError


def raw_ratio(seed: StatsBatch, host: StatsBatch) -> np.ndarray:
    return _memo(seed, _pair_key(seed, host, "raw"),
                 lambda: np.sqrt(seed.sum_sq) / np.sqrt(host.sum_sq))


def _count_ratio(seed: StatsBatch, host: StatsBatch) -> tuple[np.ndarray, np.ndarray | None]:
    """N_H / N_S, and (for a large batch with few distinct ratios: one per blueprint) its
    distinct values with each row's index into them."""
    ratio = _memo(seed, _pair_key(seed, host, "count_ratio"), lambda: host.numel / seed.numel)
    if len(seed) < _MEMO_MIN_ROWS:
        return ratio, None

    def distinct() -> tuple[np.ndarray, np.ndarray] | None:
        uniq, inverse = np.unique(ratio, return_inverse=True)
        return (uniq, inverse.astype(np.intp)) if len(uniq) <= len(ratio) // 8 else None

    return ratio, _memo(seed, _pair_key(seed, host, "count_ratio_distinct"), distinct)


def _power_of_counts(seed: StatsBatch, host: StatsBatch, a: float) -> np.ndarray:
    """(N_H / N_S)^a per row: ``np.power`` is elementwise, so taking it once per distinct
    ratio and gathering gives every row exactly the value it gives row by row."""
    ratio, distinct = _count_ratio(seed, host)
    if distinct is None:
        return np.power(ratio, a)
    uniq, inverse = distinct
    return np.power(uniq, a)[inverse]


class Raw(_RatioStrategy):
    name = "raw"
    formula = "R0 = ||g_S||_2 / ||g_H||_2"

    def _formula(self, seed, host):
        return raw_ratio(seed, host)


class Baseline(_RatioStrategy):
    name = "baseline"
    formula = "R0 * (N_H / N_S)^0.5  (esper-lite; equals RMS_S / RMS_H)"

    def _formula(self, seed, host):
        return raw_ratio(seed, host) * np.sqrt(host.numel / seed.numel)


class Exponent(_RatioStrategy):
    name = "exponent"
    formula = "R0 * (N_H / N_S)^a  (a=0 raw, a=0.5 baseline, a=1 per-element L2)"
    PARAMS = (ParamSpec("a", "float", 0.5, low=0.0, high=1.5, domain=(0.0, 2.0),
                        doc="exponent of the parameter-count normalization"), LEGACY)

    def _formula(self, seed, host):
        return raw_ratio(seed, host) * _power_of_counts(seed, host, self.params["a"])

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        checks = _checks(seed, host, legacy=self.params["legacy_edge_cases"])
        fast = _scaled_raw(seed, host, checks, self.params["a"])
        if fast is not None:
            return StatisticBatch(value=fast, state=checks.state, reason=checks.reason)
        return finish(self._formula(seed, host), checks.state, checks.reason, checks)


def _scaled_raw(seed: StatsBatch, host: StatsBatch, checks: _Checks,
                a: float) -> np.ndarray | None:
    """``finish(R0 * (N_H/N_S)^a)`` in two passes, for a large batch where that is exact.

    R0 with the fill already in place (``where(ok, R0, fill)``, kept per batch) times the
    power gathered from the distinct count ratios gives, row by row, the same product on
    every computed row and the same fill elsewhere (0 * p = 0, NaN * p = NaN for a finite
    p >= 0), provided no computed row can overflow. None when that does not hold: the
    caller then takes the general path."""
    ratio, distinct = _count_ratio(seed, host)
    if distinct is None:
        return None
    uniq, inverse = distinct

    def filled() -> tuple[np.ndarray, float, np.ndarray] | None:
        raw = raw_ratio(seed, host)
        kept = raw[checks.ok]
        if not np.isfinite(kept).all():
            return None
        used = np.zeros(len(uniq), dtype=bool)
        used[inverse[checks.ok]] = True    # the distinct ratios of the computed rows
        return (np.where(checks.ok, raw, checks.fill),
                float(np.abs(kept).max()) if len(kept) else 0.0, used)

    pre = _memo(seed, _pair_key(seed, host, "filled_raw", id(checks)), filled)
    if pre is None:
        return None
    raw_filled, raw_max, used = pre
    power = np.power(uniq, a)
    if not np.isfinite(power[used]).all() or (used.any() and raw_max * power[used].max() > 1e300):
        return None
    value = np.take(np.where(np.isfinite(power), power, 0.0), inverse)
    return np.multiply(value, raw_filled, out=value)


class MeanAbs(_RatioStrategy):
    name = "mean_abs"
    formula = "(sum|g_S| / N_S) / (sum|g_H| / N_H)"

    def _formula(self, seed, host):
        return (seed.sum_abs / seed.numel) / (host.sum_abs / host.numel)


class PerLayerType(_RatioStrategy):
    name = "per_layer_type"
    formula = ("sum_t (n_S,t / N_S) * RMS_S,t / RMS_ref,t ; ref = host RMS of the same layer "
               "type, or the host's overall RMS when the host has none of that type")
    PARAMS = (ParamSpec("exclude_embedding", "bool", False,
                        doc="leave the embedding out of the host reference"),)

    def _compute(self, seed, host, ctx):
        types = [i for i, t in enumerate(LAYER_TYPES)
                 if not (self.params["exclude_embedding"] and t == "embedding")]
        if len(types) == len(LAYER_TYPES):  # the whole host is the reference
            ref_sq, ref_n = host.sum_sq, host.numel
        else:
            ref_sq = sum(host.type_sum_sq[:, i] for i in types)
            ref_n = sum(host.type_numel[:, i] for i in types)
        checks = _checks(seed, host, host_l2=np.sqrt(ref_sq),
                         ref="host" if len(types) == len(LAYER_TYPES) else "no_embedding")
        overall_rms = np.sqrt(ref_sq / ref_n)
        total = np.zeros(len(seed))
        for i in range(len(LAYER_TYPES)):
            n_seed = seed.type_numel[:, i]
            if not n_seed.any():
                continue  # this type adds exactly 0 on every row
            ref = overall_rms
            if i in types:  # hs > 0 implies the host has parameters of this type
                hs, hn = host.type_sum_sq[:, i], host.type_numel[:, i]
                ref = np.where(hs > 0, np.sqrt(hs / hn), overall_rms)
            # (n_t / N) * sqrt(sq_t / n_t) == sqrt(sq_t * n_t) / N
            term = np.sqrt(seed.type_sum_sq[:, i] * n_seed) / ref
            total = total + (term if n_seed.all() else np.where(n_seed > 0, term, 0.0))
        return finish(total / seed.numel, checks.state, checks.reason, checks)
