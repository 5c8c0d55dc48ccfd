"""Per-replicate sufficient statistics and every count-based metric, vectorized.

A validated decisions table is reduced once to an array ``counts[r, s, b, k]`` (replicate ×
strategy × blueprint × field). Every pass-rate, TPR/FPR, disparity, balanced-accuracy, MCC and
utility figure is a function of sums of these counts, so a cluster bootstrap or a sign-flip
permutation over replicates is a weighted sum over the replicate axis followed by
:func:`strategy_metrics` on arrays with any number of leading axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Fields of the last axis of the counts array.
N, PASSED, VALUABLE, TRUE_POS, FALSE_POS, UTILITY = range(6)
N_FIELDS = 6

# Per-strategy metrics returned by strategy_metrics, in this order.
STRATEGY_METRICS: tuple[str, ...] = (
    "pass_rate_gap",
    "pass_rate_ratio",
    "equal_opportunity_gap",
    "equalized_odds_gap",
    "balanced_accuracy",
    "mcc",
    "realized_utility",
)
DISPARITY_METRICS: tuple[str, ...] = STRATEGY_METRICS[:4]
# Smooth functions of the counts (BCa intervals); the max/min disparities are not.
SMOOTH = np.array([m not in DISPARITY_METRICS for m in STRATEGY_METRICS])
# +1: larger is better; -1: smaller is better.
DIRECTION: dict[str, int] = {
    "pass_rate_gap": -1,
    "pass_rate_ratio": +1,
    "equal_opportunity_gap": -1,
    "equalized_odds_gap": -1,
    "balanced_accuracy": +1,
    "mcc": +1,
    "realized_utility": +1,
}


@dataclass(frozen=True)
class DecisionArrays:
    """A validated table as integer codes plus the replicate count array (private helper)."""

    frame: pd.DataFrame
    strategies: tuple[str, ...]
    blueprints: tuple[str, ...]
    replicates: tuple[object, ...]
    strategy_code: np.ndarray
    blueprint_code: np.ndarray
    replicate_code: np.ndarray
    counts: np.ndarray  # (R, S, B, N_FIELDS)
    seed_code: np.ndarray  # per row: which seed (replicate, blueprint, seed id) it judges
    seed_blueprint: np.ndarray  # per seed: blueprint code
    seed_replicate: np.ndarray | None = None  # per seed: replicate code

    @property
    def n_replicates(self) -> int:
        return len(self.replicates)

    @property
    def n_seeds(self) -> int:
        return len(self.seed_blueprint)

    def seed_matrix(self, column: str) -> np.ndarray:
        """(S, n_seeds) float matrix of a column per strategy and seed; NaN where not judged."""
        out = np.full((len(self.strategies), self.n_seeds), np.nan)
        out[self.strategy_code, self.seed_code] = self.frame[column].to_numpy(dtype=float)
        return out


@dataclass(frozen=True)
class CountArrays:
    """Only the per-replicate counts of a table (what the count-based tests need): the fast
    path of simulations and the power planner, which never build a DataFrame."""

    strategies: tuple[str, ...]
    blueprints: tuple[str, ...]
    counts: np.ndarray  # (R, S, B, N_FIELDS)

    @property
    def n_replicates(self) -> int:
        return int(self.counts.shape[0])


def build_arrays(frame: pd.DataFrame, *, strategies: tuple[str, ...] | None = None) -> DecisionArrays:
    """Reduce a *validated* table to codes and per-replicate counts."""
    strat = tuple(strategies) if strategies is not None else tuple(sorted(pd.unique(frame["strategy"])))
    blue = tuple(sorted(pd.unique(frame["blueprint"])))
    reps = tuple(sorted(pd.unique(frame["replicate"]), key=lambda x: (str(type(x)), x)))
    s_code = pd.Categorical(frame["strategy"], categories=list(strat)).codes.astype(np.int64)
    b_code = pd.Categorical(frame["blueprint"], categories=list(blue)).codes.astype(np.int64)
    r_code = pd.Categorical(frame["replicate"], categories=list(reps)).codes.astype(np.int64)
    R, S, B = len(reps), len(strat), len(blue)
    passed = frame["passed"].to_numpy(dtype=bool)
    valuable = frame["valuable"].to_numpy(dtype=bool)
    value = frame["value"].to_numpy(dtype=float)
    fields = np.stack(
        [
            np.ones(len(frame)),
            passed,
            valuable,
            passed & valuable,
            passed & ~valuable,
            np.where(passed, value, 0.0),
        ],
        axis=1,
    ).astype(float)
    flat = (r_code * S + s_code) * B + b_code
    counts = np.zeros((R * S * B, N_FIELDS))
    np.add.at(counts, flat, fields)
    seed_key = pd.MultiIndex.from_arrays([r_code, b_code, frame["seed"].to_numpy()])
    seed_code, uniques = pd.factorize(seed_key)
    seed_blueprint = np.asarray(uniques.get_level_values(1), dtype=np.int64)
    seed_replicate = np.asarray(uniques.get_level_values(0), dtype=np.int64)
    return DecisionArrays(
        frame=frame,
        strategies=strat,
        blueprints=blue,
        replicates=reps,
        strategy_code=s_code,
        blueprint_code=b_code,
        replicate_code=r_code,
        counts=counts.reshape(R, S, B, N_FIELDS),
        seed_code=np.asarray(seed_code, dtype=np.int64),
        seed_blueprint=seed_blueprint,
        seed_replicate=seed_replicate,
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def group_rates(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass rate, TPR and FPR per group from counts (..., B, N_FIELDS)."""
    n = counts[..., N]
    pass_rate = _ratio(counts[..., PASSED], n)
    tpr = _ratio(counts[..., TRUE_POS], counts[..., VALUABLE])
    fpr = _ratio(counts[..., FALSE_POS], n - counts[..., VALUABLE])
    return pass_rate, tpr, fpr


def gap(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """max − min over ``axis`` ignoring undefined (NaN) groups; NaN with < 2 defined groups."""
    defined = ~np.isnan(x)
    hi = np.max(np.where(defined, x, -np.inf), axis=axis)
    lo = np.min(np.where(defined, x, np.inf), axis=axis)
    enough = defined.sum(axis=axis) >= 2
    return np.where(enough, hi - lo, np.nan)


def min_max_ratio(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """min / max over ``axis`` ignoring NaN groups; 1.0 when every defined group is 0."""
    defined = ~np.isnan(x)
    hi = np.max(np.where(defined, x, -np.inf), axis=axis)
    lo = np.min(np.where(defined, x, np.inf), axis=axis)
    enough = defined.sum(axis=axis) >= 2
    ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 1.0)
    return np.where(enough, ratio, np.nan)


def nan_max2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise max that ignores a NaN side (NaN only when both are NaN)."""
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, np.maximum(a, b)))


def overall_rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled confusion-matrix metrics per strategy from counts (..., B, N_FIELDS)."""
    tot = counts.sum(axis=-2)
    n, val = tot[..., N], tot[..., VALUABLE]
    tp, fp = tot[..., TRUE_POS], tot[..., FALSE_POS]
    fn = val - tp
    tn = n - val - fp
    tpr = _ratio(tp, val)
    tnr = _ratio(tn, n - val)
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    mcc = np.zeros_like(n)
    np.divide(tp * tn - fp * fn, np.sqrt(denom, where=denom > 0, out=np.ones_like(denom)),
              out=mcc, where=denom > 0)
    return {
        "pass_rate": _ratio(tot[..., PASSED], n),
        "tpr": tpr,
        "fpr": _ratio(fp, n - val),
        "balanced_accuracy": (tpr + tnr) / 2.0,
        "mcc": mcc,
        "realized_utility": tot[..., UTILITY],
    }


def strategy_metrics(counts: np.ndarray) -> np.ndarray:
    """Every per-strategy metric from counts (..., S, B, N_FIELDS) → (..., S, len(STRATEGY_METRICS)).

    MCC follows scikit-learn's convention (0 when a confusion-matrix margin is empty);
    balanced accuracy is NaN when either class is absent.
    """
    pass_rate, tpr, fpr = group_rates(counts)
    overall = overall_rates(counts)
    tpr_gap, fpr_gap = gap(tpr), gap(fpr)
    return np.stack(
        [
            gap(pass_rate),
            min_max_ratio(pass_rate),
            tpr_gap,
            nan_max2(tpr_gap, fpr_gap),
            overall["balanced_accuracy"],
            overall["mcc"],
            overall["realized_utility"],
        ],
        axis=-1,
    )


def resampled_counts(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Counts summed over replicates with weights (W, R) → (W, S, B, N_FIELDS)."""
    R = counts.shape[0]
    return (weights @ counts.reshape(R, -1)).reshape((weights.shape[0],) + counts.shape[1:])
