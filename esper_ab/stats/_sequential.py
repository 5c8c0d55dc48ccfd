"""Sequential confirmation: stop once the answer is settled, with error rates that peeking
does not inflate.

Unit: the replicate. For each candidate, replicate r gives one paired difference
``x_r`` in [-1, 1] against the baseline on the same seeds (:func:`replicate_differences`):

- balanced accuracy (and MCC, which uses the same proxy): ``x_r = (dTP_r / P_r + dTN_r /
  N_r) / 2``, the replicate's own balanced-accuracy difference (a term is left out when the
  replicate has no valuable, or no non-valuable, seed);
- realized utility: ``x_r = dU_r / sum_i |v_i|``, the admitted-value difference over the
  replicate's total absolute value (so it is bounded).

Two always-valid tests run on these, each an **e-process** built by betting (Waudby-Smith &
Ramdas 2023, "Estimating means of bounded random variables by betting", JRSS-B; Ramdas et
al. 2023, "Game-theoretic statistics and safe anytime-valid inference"): a uniform mixture
over bets ``lambda`` in ``LAMBDAS`` of the wealth ``prod_r (1 + lambda * y_r)``. Under its
null the mixture is a non-negative supermartingale with initial value 1, so by Ville's
inequality P(it ever reaches 1/a) <= a, however often one looks.

- **gain**: y = x, null "mean difference <= 0"; ``p_gain = min(1, 1 / max wealth)`` is an
  anytime-valid p-value (Holm over the candidates keeps the family-wise rate);
- **not better**: y = (margin - x) / (1 + margin), null "mean difference >= margin".

The confirmation stops at the first look (at least ``min_replicates``) where every candidate
is settled: its gain wealth reached ``k / alpha`` or its not-better wealth did (k candidates,
Bonferroni). An A/A simulation (tests/stats/test_sequential.py) checks the rate of declared
gains stays <= alpha when one looks after every replicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from esper_ab.errors import DataError, bad_value

LAMBDAS = np.linspace(0.05, 0.9, 18)   # the bets mixed: 1 + lambda * y >= 0.1 for y >= -1
SETTLED = ("gain", "not_better", "open")

__all__ = ["LAMBDAS", "SequentialResult", "e_process", "holm_anytime",
           "replicate_differences", "sequential_test"]


def e_process(y: np.ndarray) -> np.ndarray:
    """The mixture wealth after each observation of ``y`` (last axis, values in [-1, 1])."""
    y = np.asarray(y, dtype=np.float64)
    if y.size and (np.nanmax(np.abs(y)) > 1 + 1e-12 or np.isnan(y).any()):
        raise DataError("e_process needs finite observations in [-1, 1]")
    logs = np.cumsum(np.log1p(LAMBDAS[:, None] * y[..., None, :]), axis=-1)
    return np.exp(logs).mean(axis=-2)


def _paired(table: pd.DataFrame, label: str, baseline: str) -> pd.DataFrame:
    key = "seed" if "seed" in table.columns else "seed_id"
    cols = ["replicate", key, "passed", "valuable", "value"]
    a = table.loc[table["strategy"] == label, cols].set_index(["replicate", key])
    b = table.loc[table["strategy"] == baseline, cols].set_index(["replicate", key])
    if len(a) != len(b) or not a.index.sort_values().equals(b.index.sort_values()):
        raise DataError(f"strategy {label!r} and the baseline {baseline!r} are not on the same "
                        "seeds: give both on every seed of every replicate")
    b = b.loc[a.index]
    return pd.DataFrame({"replicate": a.index.get_level_values(0),
                         "d_pass": a["passed"].to_numpy(int) - b["passed"].to_numpy(int),
                         "valuable": a["valuable"].to_numpy(bool),
                         "value": a["value"].to_numpy(float)})


def replicate_differences(table: pd.DataFrame, *, baseline: str, candidates: Sequence[str],
                          objective: str, replicates: Sequence[int] | None = None
                          ) -> dict[str, np.ndarray]:
    """Per candidate, the paired difference of each replicate (in ``replicates`` order,
    default sorted), bounded in [-1, 1] (see the module docstring)."""
    if objective not in ("balanced_accuracy", "mcc", "realized_utility"):
        raise bad_value("objective", objective,
                        "use balanced_accuracy, mcc or realized_utility")
    reps = sorted(int(r) for r in pd.unique(table["replicate"])) if replicates is None \
        else [int(r) for r in replicates]
    out = {}
    for c in candidates:
        p = _paired(table, c, baseline)
        rows = []
        for r in reps:
            g = p[p["replicate"] == r]
            if g.empty:
                raise DataError(f"replicate {r} has no seed of {c!r}: give every replicate")
            d, v = g["d_pass"].to_numpy(), g["valuable"].to_numpy()
            if objective == "realized_utility":
                scale = np.abs(g["value"].to_numpy()).sum()
                rows.append(float((d * g["value"].to_numpy()).sum() / scale) if scale else 0.0)
                continue
            terms = []
            if v.any():
                terms.append(d[v].sum() / v.sum())          # dTP / P
            if (~v).any():
                terms.append(-d[~v].sum() / (~v).sum())     # dTN / N (admitting fewer bad)
            rows.append(float(sum(terms) / 2.0))
        out[c] = np.asarray(rows, dtype=np.float64)
    return out


@dataclass(frozen=True)
class SequentialResult:
    """The e-processes of every candidate, where the confirmation stopped and why."""

    candidates: tuple[str, ...]
    replicates: tuple[int, ...]          # in the order they were looked at
    differences: Mapping[str, np.ndarray] = field(repr=False)
    e_gain: Mapping[str, np.ndarray] = field(repr=False)
    e_not_better: Mapping[str, np.ndarray] = field(repr=False)
    alpha: float = 0.05
    margin: float = 0.05
    min_replicates: int = 2
    n_used: int = 0                      # replicates up to the stop (all when none)
    stopped_early: bool = False

    @property
    def threshold(self) -> float:
        return len(self.candidates) / self.alpha

    def settled(self, candidate: str, n: int | None = None) -> str:
        """gain / not_better / open after the first ``n`` replicates (default: the stop)."""
        n = self.n_used if n is None else n
        if n == 0:
            return "open"
        if self.e_gain[candidate][:n].max() >= self.threshold:
            return "gain"
        if self.e_not_better[candidate][:n].max() >= self.threshold:
            return "not_better"
        return "open"

    def pvalue(self, candidate: str) -> float:
        """The anytime-valid p-value of "no gain" at the stop: 1 / the largest wealth."""
        if self.n_used == 0:
            return 1.0
        return float(min(1.0, 1.0 / self.e_gain[candidate][:self.n_used].max()))

    def to_dict(self) -> dict[str, object]:
        def path(a: np.ndarray) -> list[float]:
            return [float(x) for x in a[:self.n_used]]

        return {"method": "betting e-process (uniform mixture over lambda in "
                          f"[{LAMBDAS[0]:g}, {LAMBDAS[-1]:g}]), Ville's inequality",
                "alpha": self.alpha, "margin": self.margin, "threshold": self.threshold,
                "min_replicates": self.min_replicates, "replicates": list(self.replicates),
                "n_used": self.n_used, "stopped_early": self.stopped_early,
                "candidates": {c: {"settled": self.settled(c), "pvalue_anytime": self.pvalue(c),
                                   "differences": path(self.differences[c]),
                                   "e_gain": path(self.e_gain[c]),
                                   "e_not_better": path(self.e_not_better[c])}
                               for c in self.candidates}}


def sequential_test(differences: Mapping[str, np.ndarray], *, replicates: Sequence[int],
                    alpha: float = 0.05, margin: float = 0.05,
                    min_replicates: int = 2) -> SequentialResult:
    """Run both e-processes over ``differences`` (candidate -> per-replicate differences in
    the order of ``replicates``) and find the first look where every candidate is settled."""
    if not 0 < alpha < 1:
        raise bad_value("alpha", alpha, "use a level in (0, 1), e.g. 0.05")
    if not (isinstance(margin, int | float) and margin > 0):
        raise bad_value("margin", margin, "use a positive margin in the objective's units")
    if not (isinstance(min_replicates, int) and min_replicates >= 1):
        raise bad_value("min_replicates", min_replicates, "use 1 or more")
    names = tuple(differences)
    n = len(replicates)
    if not names:
        raise DataError("sequential_test needs at least one candidate")
    for c in names:
        if len(differences[c]) != n:
            raise DataError(f"candidate {c!r} has {len(differences[c])} differences for {n} "
                            "replicates: give one per replicate")
    gain = {c: e_process(np.asarray(differences[c])) for c in names}
    worse = {c: e_process((margin - np.asarray(differences[c])) / (1.0 + margin))
             for c in names}
    bound = len(names) / alpha
    running = np.ones(n, dtype=bool)
    for c in names:
        hit = np.maximum.accumulate(np.maximum(gain[c], worse[c])) >= bound
        running &= hit
    looks = np.flatnonzero(running & (np.arange(1, n + 1) >= min_replicates))
    stop = int(looks[0]) + 1 if looks.size else n
    return SequentialResult(names, tuple(int(r) for r in replicates), dict(differences), gain,
                            worse, float(alpha), float(margin), int(min_replicates), stop,
                            stop < n)


def holm_anytime(result: SequentialResult) -> dict[str, float]:
    """Holm-adjusted anytime-valid p-values over the candidates."""
    p = sorted((result.pvalue(c), c) for c in result.candidates)
    k, out, running = len(p), {}, 0.0
    for i, (pv, c) in enumerate(p):
        running = max(running, min(1.0, (k - i) * pv))
        out[c] = running
    return out
