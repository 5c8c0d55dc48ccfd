"""Gradient-ratio strategies: raw, baseline, exponent, mean_abs, per_layer_type."""

from __future__ import annotations

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


def finish(raw: np.ndarray, state: np.ndarray, reason: np.ndarray) -> StatisticBatch:
    """Fill values: computed where ok, 0 for the zero-valued edge cases, NaN elsewhere."""
    value = np.where(reason == R["ok"], raw, np.nan)
    zero = (state == VALUE) & (reason != R["ok"])
    value = np.where(zero, 0.0, value)
    # A computed value that still came out non-finite (overflow) is unmeasured.
    bad = (reason == R["ok"]) & ~np.isfinite(value)
    state = np.where(bad, UNMEASURED, state).astype(np.int8)
    reason = np.where(bad, R["nonfinite_seed"], reason).astype(np.int8)
    value = np.where(bad, np.nan, value)
    return StatisticBatch(value=value.astype(np.float64), state=state, reason=reason)


class _RatioStrategy(Strategy):
    THRESHOLD = RATIO_THRESHOLD
    PARAMS = (LEGACY,)

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        state, reason = gradient_checks(seed, host, legacy=self.params["legacy_edge_cases"])
        return finish(self._formula(seed, host), state, reason)

    def _formula(self, seed: StatsBatch, host: StatsBatch) -> np.ndarray:
        raise NotImplementedError


def raw_ratio(seed: StatsBatch, host: StatsBatch) -> np.ndarray:
    return np.sqrt(seed.sum_sq) / np.sqrt(host.sum_sq)


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
        return raw_ratio(seed, host) * np.power(host.numel / seed.numel, self.params["a"])


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
        state, reason = gradient_checks(seed, host, host_l2=np.sqrt(ref_sq))
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
        return finish(total / seed.numel, state, reason)
