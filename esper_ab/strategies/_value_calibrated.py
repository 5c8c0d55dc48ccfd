"""``value_calibrated``: per-blueprint thresholds fitted to the measured ground truth.

Every other strategy scores gradients and hopes the score tracks value. This one looks at
the answer: on *calibration* replicates (held out from evaluation; replay cross-fits them
like the other calibrating strategies, a sweep's confirmation applies the calibration fitted
on the search replicates) it knows each seed's placebo-controlled value (``value_acc_pp``)
and whether it is ``valuable``, and it fits, per blueprint, the threshold on a chosen
gradient statistic that maximizes an objective:

- ``balanced_accuracy``: (TPR + TNR) / 2 of "admitted" against "valuable" within the
  blueprint, or
- ``realized_utility``: the summed value of the blueprint's admitted seeds.

A seed's score in the fit is the median of its measurable per-step statistic (dead and
unmeasured steps left out), an approximation of what the gate's window sees; the gate's own
threshold (a multiplier, 1.0 = at the fitted threshold) corrects the rest. Candidate
thresholds are the lowest score (admit all), the geometric midpoints between consecutive
scores, and +inf (admit none); ties go to the middle of the best run.

A blueprint with fewer than ``min_seeds`` calibration seeds of each kind (valuable and not,
for balanced accuracy; seeds, for utility) is not fitted on its own: it admits every seed
when most of its calibration seeds are valuable (utility: when their summed value is
positive) and none otherwise. A blueprint the calibration never saw uses the threshold
fitted on every seed pooled. Within a blueprint the parameter counts are fixed, so raw,
baseline and exponent statistics differ by a constant factor there and give the same
gate: the ``statistic`` choices are the baseline ratio, mean |g| and per-layer-type.

The fitted state (exported in ``winner.yaml``) holds the thresholds (``null`` where no
threshold admits: the blueprint admits no seed), the rule each blueprint got, its calibration
counts and ``data_sha256``, a hash of the per-seed calibration table it was fitted on.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.errors import ConfigError
from esper_ab.strategies._base import (
    VALUE,
    CalibrationData,
    ContextBatch,
    ParamSpec,
    R,
    StatisticBatch,
    StatsBatch,
    Strategy,
)
from esper_ab.strategies._ratio import Baseline, MeanAbs, PerLayerType

_FLOOR = 1e-12
_STATISTICS = {"baseline": Baseline, "mean_abs": MeanAbs, "per_layer_type": PerLayerType}
RULES = ("fitted", "admit_all", "admit_none", "pooled")


@dataclass(frozen=True)
class ValueCalibration(CalibrationData):
    """Calibration rows with their seed's measured ground truth: ``seed_key`` (one id per
    seed: rows of one seed share it), ``value`` (pp against the placebo) and ``valuable``."""

    seed_key: np.ndarray | None = None
    value: np.ndarray | None = None
    valuable: np.ndarray | None = None


class LabelCalibrated(Strategy):
    """A strategy calibrated against measured values (replay cross-fits it with labels).

    The fit runs in two steps: ``seed_scores`` (the calibration rows reduced to one row per
    seed, with the hash of that table) and ``fit_seeds`` (the fitted state from it); the
    score is ``apply_thresholds`` of the base statistic and ``blueprint_thresholds``. So the
    replay engine computes the base statistic once per ``base_key``, the per-seed table once
    per (``base_key``, calibration fold), and only the cheap fit and score per config;
    ``_fit`` / ``_compute`` (the online path) go through the very same methods."""

    needs_calibration = True
    needs_labels = True

    def base_statistic(self, seed: StatsBatch, host: StatsBatch,
                       ctx: ContextBatch) -> StatisticBatch:
        raise NotImplementedError

    def base_key(self) -> tuple:
        """The parameters that fix ``base_statistic`` (what replay caches it by)."""
        raise NotImplementedError

    def seed_scores(self, base: StatisticBatch, blueprints: np.ndarray, seed_key: np.ndarray,
                    value: np.ndarray, valuable: np.ndarray) -> tuple[pd.DataFrame, str]:
        raise NotImplementedError

    def fit_seeds(self, per_seed: pd.DataFrame, digest: str) -> dict[str, Any]:
        raise NotImplementedError

    def blueprint_thresholds(self, blueprints: Any) -> np.ndarray:
        """The fitted threshold of each of ``blueprints`` (+inf: admit none)."""
        raise NotImplementedError

    def apply_thresholds(self, base: StatisticBatch, t: np.ndarray) -> StatisticBatch:
        """The score of ``base`` under per-row thresholds ``t`` (broadcast against it)."""
        raise NotImplementedError

    def fit_rows(self, base: StatisticBatch, blueprints: np.ndarray, seed_key: np.ndarray,
                 value: np.ndarray, valuable: np.ndarray) -> dict[str, Any]:
        return self.fit_seeds(*self.seed_scores(base, blueprints, seed_key, value, valuable))

    def transform(self, base: StatisticBatch, blueprints: np.ndarray) -> StatisticBatch:
        # Hash the blueprint names once (a few distinct among many rows), never sort them.
        codes, uniq = pd.factorize(np.asarray(blueprints, dtype=object), use_na_sentinel=False)
        return self.apply_thresholds(base, self.blueprint_thresholds(uniq)[codes])

    def _fit(self, cal: CalibrationData) -> dict[str, Any]:
        if not isinstance(cal, ValueCalibration) or cal.valuable is None \
                or cal.value is None or cal.seed_key is None:
            raise ConfigError(f"strategy {self.name!r} is fitted against measured seed values: "
                              "give ValueCalibration rows (seed_key, value, valuable), as "
                              "replay does, or load a fitted state from winner.yaml")
        base = self.base_statistic(cal.seed, cal.host, cal.context)
        return self.fit_rows(base, np.asarray(cal.blueprint, dtype=object),
                             np.asarray(cal.seed_key), np.asarray(cal.value, dtype=np.float64),
                             np.asarray(cal.valuable, dtype=bool))

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        bps = (np.full(len(seed), None, dtype=object) if ctx.blueprint is None
               else np.asarray(ctx.blueprint, dtype=object))
        return self.transform(self.base_statistic(seed, host, ctx), bps)


def _cuts(scores: np.ndarray) -> np.ndarray:
    """Admit-all, the geometric midpoints of consecutive distinct scores, admit-none."""
    u = np.unique(scores)
    mids = np.sqrt(np.maximum(u[:-1], _FLOOR) * np.maximum(u[1:], _FLOOR))
    return np.concatenate([[0.0], mids, [math.inf]])


def _best_cut(scores: np.ndarray, valuable: np.ndarray, value: np.ndarray,
              objective: str) -> tuple[float, float]:
    """(threshold, objective value) maximizing the objective over the candidate cuts."""
    cuts = _cuts(scores)
    admitted = scores[None, :] >= cuts[:, None]            # [cuts, seeds]
    if objective == "balanced_accuracy":
        p, n = valuable.sum(), (~valuable).sum()
        tpr = (admitted & valuable).sum(axis=1) / p
        tnr = (~admitted & ~valuable).sum(axis=1) / n
        score = (tpr + tnr) / 2.0
    else:
        score = (admitted * value[None, :]).sum(axis=1)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    i = int(best[len(best) // 2])                           # the middle of the best run
    return float(cuts[i]), float(score[i])


class ValueCalibrated(LabelCalibrated):
    name = "value_calibrated"
    formula = ("S / t_b: S the chosen statistic (baseline R, mean |g| or per-layer-type), t_b "
               "per blueprint fitted on calibration replicates to maximize the objective "
               "(balanced accuracy or realized utility) against the measured value; pass when "
               ">= threshold (1.0 = at t_b)")
    PARAMS = (
        ParamSpec("statistic", "categorical", "baseline", choices=tuple(_STATISTICS),
                  doc="the gradient statistic whose per-blueprint threshold is fitted"),
        ParamSpec("objective", "categorical", "balanced_accuracy",
                  choices=("balanced_accuracy", "realized_utility"),
                  doc="what the per-blueprint threshold maximizes on the calibration seeds"),
        ParamSpec("min_seeds", "int", 3, low=1, high=20, domain=(1, 10**6),
                  doc="calibration seeds of each kind a blueprint needs for its own fit"),
    )
    THRESHOLD = ParamSpec("threshold", "float", 1.0, low=0.25, high=4.0, log=True,
                          domain=(0.0, float("inf")),
                          doc="multiplier of each blueprint's fitted threshold")

    def base_statistic(self, seed, host, ctx):
        return _STATISTICS[self.params["statistic"]]().statistic_batch(seed, host, ctx)

    def base_key(self):
        return (self.params["statistic"],)

    def seed_scores(self, base, blueprints, seed_key, value, valuable):
        usable = (base.state == VALUE) & (base.reason == R["ok"])
        if not usable.any():
            raise ConfigError("calibration has no measurable statistic: record calibration "
                              "replicates whose seeds receive gradients")
        per_seed = _per_seed(seed_key[usable], blueprints[usable], base.value[usable],
                             value[usable], valuable[usable])
        digest = hashlib.sha256(per_seed.to_csv(index=False, float_format="%.17g")
                                .encode()).hexdigest()
        return per_seed, digest

    def fit_seeds(self, per_seed, digest):
        objective, k = self.params["objective"], self.params["min_seeds"]
        thresholds, rules, counts, fit = {}, {}, {}, {}
        for bp, g in per_seed.groupby("blueprint", sort=True):
            v, s, val = g["valuable"].to_numpy(bool), g["score"].to_numpy(), g["value"].to_numpy()
            counts[str(bp)] = [int(v.sum()), int((~v).sum())]
            enough = (min(v.sum(), (~v).sum()) >= k) if objective == "balanced_accuracy" \
                else len(v) >= k
            if enough:
                cut, fit[str(bp)] = _best_cut(s, v, val, objective)
                thresholds[str(bp)] = None if math.isinf(cut) else cut
                rules[str(bp)] = "fitted"
            else:
                admit = v.mean() > 0.5 if objective == "balanced_accuracy" else val.sum() > 0
                thresholds[str(bp)] = 0.0 if admit else None
                rules[str(bp)] = "admit_all" if admit else "admit_none"
        pv, ps, pval = (per_seed[c].to_numpy() for c in ("valuable", "score", "value"))
        pooled = _best_cut(ps, pv.astype(bool), pval, objective)[0] \
            if (objective != "balanced_accuracy" or 0 < pv.sum() < len(pv)) else \
            (0.0 if pv.all() else None)
        if pooled is not None and math.isinf(pooled):
            pooled = None
        return {"statistic": self.params["statistic"], "objective": objective,
                "thresholds": thresholds, "rules": rules, "pooled": pooled, "n": counts,
                "fit_objective": fit, "n_seeds": int(len(per_seed)), "data_sha256": digest}

    def blueprint_thresholds(self, blueprints):
        fitted = self._fitted or {}
        table = fitted.get("thresholds", {})
        pooled = fitted.get("pooled", 0.0)
        return np.array([_threshold(table.get(str(u), pooled)) for u in blueprints],
                        dtype=np.float64)

    def apply_thresholds(self, base, t):
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(np.isinf(t), 0.0, base.value / np.maximum(t, _FLOOR))
        value = np.where(base.state == VALUE, score, np.nan)
        return StatisticBatch(value=value, state=base.state, reason=base.reason)

    def _validate_fitted(self, state):
        missing = [k for k in ("thresholds", "pooled", "statistic") if k not in state]
        if missing:
            raise ConfigError(f"calibration state of {self.name!r} lacks {missing}: re-export it")
        if state["statistic"] != self.params["statistic"]:
            raise ConfigError(f"calibration state of {self.name!r} was fitted on statistic "
                              f"{state['statistic']!r}, not {self.params['statistic']!r}: "
                              "re-export it")
        return state

    def thresholds(self, multiplier: float = 1.0) -> dict[str, float]:
        """Per-blueprint thresholds in the statistic's own units (for export and reports);
        a blueprint that admits no seed (rule ``admit_none``) has none."""
        table = (self._fitted or {}).get("thresholds", {})
        return {bp: multiplier * float(t) for bp, t in table.items() if t is not None}


def _threshold(t: float | None) -> float:
    """A stored threshold; None (no threshold admits: admit none) is +inf."""
    return math.inf if t is None else float(t)


def _per_seed(keys: np.ndarray, blueprints: np.ndarray, stat: np.ndarray, value: np.ndarray,
              valuable: np.ndarray) -> pd.DataFrame:
    """One row per seed, sorted by ``str(seed key)``: its blueprint, value and label (the
    seed's first row) and its score (the median statistic of its rows). Keys are hashed,
    and only the distinct keys are turned into strings and sorted."""
    codes, uniq = pd.factorize(keys, use_na_sentinel=False)
    _, first = np.unique(codes, return_index=True)
    score = pd.Series(stat).groupby(codes, sort=True).median().to_numpy()
    per_seed = pd.DataFrame({"seed": [str(u) for u in uniq], "blueprint": blueprints[first],
                             "score": score, "value": value[first],
                             "valuable": valuable[first]})
    return per_seed.sort_values("seed", kind="stable").reset_index(drop=True)

