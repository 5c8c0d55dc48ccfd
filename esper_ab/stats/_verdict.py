"""The verdict: which strategy (if any) beats the baseline, under an explicit rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

from esper_ab.errors import bad_value
from esper_ab.stats._paired import metric_test_name
from esper_ab.stats._results import TestResult

Objective = Literal["balanced_accuracy", "mcc", "realized_utility"]
FairnessMetric = Literal["equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"]
GapBound = Literal["estimate", "ci_high"]
NO_WINNER = "no strategy beats the baseline"


@dataclass(frozen=True)
class SelectionRule:
    """Maximize ``objective`` over strategies that satisfy both constraints:

    - fairness: ``fairness_metric`` ≤ ``max_gap`` (its point estimate, or with
      ``gap_bound="ci_high"`` the upper end of its cluster-bootstrap CI);
    - significance (``require_significance``): the objective is higher than the baseline's and
      the sign-flip permutation test of the difference has Holm-adjusted p < alpha
      (``alpha=None``: the analysis' alpha). Without it, the baseline itself competes.
    """

    objective: Objective = "balanced_accuracy"
    fairness_metric: FairnessMetric = "equalized_odds_gap"
    max_gap: float = 0.2
    gap_bound: GapBound = "estimate"
    require_significance: bool = True
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.objective not in ("balanced_accuracy", "mcc", "realized_utility"):
            raise bad_value("objective", self.objective,
                            "use 'balanced_accuracy', 'mcc' or 'realized_utility'")
        if self.fairness_metric not in ("equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"):
            raise bad_value("fairness_metric", self.fairness_metric,
                            "use 'equalized_odds_gap', 'equal_opportunity_gap' or 'pass_rate_gap'")
        if not (isinstance(self.max_gap, int | float) and self.max_gap >= 0):
            raise bad_value("max_gap", self.max_gap, "use a gap bound >= 0 (1.0 disables it)")
        if self.gap_bound not in ("estimate", "ci_high"):
            raise bad_value("gap_bound", self.gap_bound, "use 'estimate' or 'ci_high'")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise bad_value("alpha", self.alpha, "use a level in (0, 1), e.g. 0.05")


@dataclass(frozen=True)
class Candidate:
    """How one strategy fared against the rule."""

    strategy: str
    objective_value: float
    difference: float
    ci: tuple[float, float] | None
    pvalue: float
    pvalue_adjusted: float
    gap: float
    gap_ci: tuple[float, float]
    gap_ok: bool
    significant: bool

    @property
    def eligible(self) -> bool:
        return self.gap_ok and self.significant


@dataclass(frozen=True)
class Verdict:
    """The winner (None when no strategy beats the baseline) and why, with the numbers."""

    winner: str | None
    reason: str
    baseline: str
    rule: SelectionRule
    alpha: float
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self) -> dict[str, object]:
        def clean(v: object) -> object:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        cands = []
        for c in self.candidates:
            d = {k: clean(v) for k, v in asdict(c).items()}
            d["ci"] = None if c.ci is None else [clean(x) for x in c.ci]
            d["gap_ci"] = [clean(x) for x in c.gap_ci]
            d["eligible"] = c.eligible
            cands.append(d)
        return {"winner": self.winner, "reason": self.reason, "baseline": self.baseline,
                "alpha": self.alpha, "rule": asdict(self.rule), "candidates": cands}


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _gap(c: Candidate) -> str:
    return f"{_fmt(c.gap)} (CI [{_fmt(c.gap_ci[0])}, {_fmt(c.gap_ci[1])}])"


def decide(
    *, disparities: pd.DataFrame, tests: Sequence[TestResult], baseline: str,
    rule: SelectionRule, alpha: float,
) -> Verdict:
    """Apply ``rule`` to an analysis' disparity table and adjusted tests."""
    alpha = rule.alpha if rule.alpha is not None else alpha
    obj, fair = rule.objective, rule.fairness_metric
    gap_col = fair if rule.gap_bound == "estimate" else f"{fair}_ci_high"
    by_strategy = {t.strategy: t for t in tests if t.name == metric_test_name(obj) and t.blueprint is None}
    base_value = float(disparities.loc[baseline, obj])
    cands = []
    for s in disparities.index:
        if s == baseline and rule.require_significance:
            continue
        value = float(disparities.loc[s, obj])
        gap = float(disparities.loc[s, gap_col])
        gap_ci = (float(disparities.loc[s, f"{fair}_ci_low"]),
                  float(disparities.loc[s, f"{fair}_ci_high"]))
        t = by_strategy.get(s)
        p = t.pvalue if t else float("nan")
        p_adj = t.pvalue_adjusted if t and t.pvalue_adjusted is not None else float("nan")
        diff = value - base_value
        significant = (diff > 0 and p_adj < alpha) if rule.require_significance else True
        cands.append(Candidate(
            strategy=str(s), objective_value=value, difference=diff, ci=t.ci if t else None,
            pvalue=p, pvalue_adjusted=p_adj, gap=gap, gap_ci=gap_ci, gap_ok=bool(gap <= rule.max_gap),
            significant=bool(significant)))
    eligible = [c for c in cands if c.eligible]
    gap_word = fair if rule.gap_bound == "estimate" else f"upper CI of {fair}"
    if eligible:
        best = sorted(eligible, key=lambda c: (-c.objective_value, c.strategy))[0]
        if best.strategy != baseline:
            ci = best.ci or (float("nan"), float("nan"))
            reason = (
                f"{best.strategy} beats the baseline {baseline!r}: {obj} "
                f"{_fmt(best.objective_value)} vs {_fmt(base_value)} "
                f"(difference {_fmt(best.difference, '+.3f')}, CI [{_fmt(ci[0])}, {_fmt(ci[1])}]")
            if rule.require_significance:
                reason += f", Holm-adjusted p = {_fmt(best.pvalue_adjusted, '.3g')} < {alpha:g}"
            reason += f"); {gap_word} {_gap(best)} <= {rule.max_gap:g}"
            others = [c for c in eligible if c is not best]
            if others:
                reason += "; also eligible: " + ", ".join(
                    f"{c.strategy} ({obj} {_fmt(c.objective_value)})" for c in others)
            return Verdict(best.strategy, reason, baseline, rule, alpha, tuple(cands))
    why = []
    for c in cands:
        if c.strategy == baseline:
            continue
        parts = []
        if rule.require_significance and not c.significant:
            parts.append(f"{obj} {_fmt(c.difference, '+.3f')} vs baseline, Holm-adjusted p = "
                         f"{_fmt(c.pvalue_adjusted, '.3g')} (needs a gain with p < {alpha:g})")
        if not c.gap_ok:
            parts.append(f"{gap_word} {_gap(c)} > {rule.max_gap:g}")
        if not parts:
            parts.append(f"{obj} {_fmt(c.objective_value)} not above the baseline's "
                         f"{_fmt(base_value)}")
        why.append(f"{c.strategy}: " + "; ".join(parts))
    if not why:
        reason = f"{NO_WINNER} {baseline!r}: the table holds no other strategy"
    else:
        reason = f"{NO_WINNER} {baseline!r} ({obj} {_fmt(base_value)}): " + " | ".join(why)
    return Verdict(None, reason, baseline, rule, alpha, tuple(cands))
