"""What keeps a candidate open, and how many replicates would decide it.

A verdict is *undecided* only for a reason it can name, one of:

- ``min_replicates``: fewer replicates than the rule's minimum. The exact sign-flip test over
  R replicates cannot give a two-sided p below ``2 / 2**R``, and Holm over m candidates
  multiplies the smallest p by m, so no gain can be significant while ``m * 2**(1 - R) >=
  alpha``: the minimum is the smallest R past that (6 at alpha 0.05 with one candidate, 7 with
  three), and never under ``SelectionRule.min_replicates``. Below it no answer is definite, a
  degenerate gate included: a "not better" there would be decided before any data.
- ``multiplicity``: the gain's raw p is under alpha, its Holm-adjusted p is not.
- ``seeds``: the fairness gap cannot be computed (fewer than 2 blueprints with enough
  valuable seeds for TPR and enough non-valuable seeds for FPR): more seeds of known value are
  needed, not a replicate count.
- ``fairness``: the gap's CI straddles the bound (fairness undetermined). The replicates that
  would settle it assume the CI half-width shrinks like 1/sqrt(R) around the observed gap: at
  ``n = R ((z_ci + z_power) se / |bound - gap|)^2`` the CI excludes the bound with the target
  power.
- ``power``: the gain is neither significant nor shown under the margin; the analytic planner
  (``_power``) at the observed effect and SE gives the replicates for the target power.

Every count is larger than the current number of replicates, or None ("more than the
planner's cap", or "not a matter of replicates").
"""

from __future__ import annotations

import math
from typing import Any

from esper_ab.stats._lazy import sps
from esper_ab.stats._power import MAX_REPLICATES, replicates_for


def sign_flip_floor(n_replicates: int) -> float:
    """The smallest two-sided p-value of the exact sign-flip test over ``n_replicates``."""
    return min(1.0, 2.0 / 2.0 ** n_replicates)


def reachable_replicates(alpha: float, m: int) -> int:
    """The fewest replicates at which a Holm-adjusted (m candidates) exact sign-flip p-value
    can fall below ``alpha``."""
    n = 1
    while m * sign_flip_floor(n) >= alpha:
        n += 1
    return n


def minimum_replicates(rule: Any, alpha: float, m: int) -> int:
    """The documented minimum for any definite verdict (see the module docstring)."""
    reach = reachable_replicates(alpha, m) if rule.require_significance else 1
    return max(int(rule.min_replicates), reach)


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x + 0.0, spec)


def floor_text(n: int, alpha: float, m: int, minimum: int) -> str:
    """Why no answer is definite at ``n`` replicates (below the minimum)."""
    if n >= reachable_replicates(alpha, m):
        return (f"{n} replicates are under the minimum of {minimum} for a definite verdict "
                "(too few clusters for the bootstrap and the tests)")
    floor = sign_flip_floor(n)
    text = (f"at {n} replicates the exact sign-flip p-value cannot go below 2/{2 ** n} = "
            f"{floor:.3g}")
    if m > 1:
        text += f", and Holm over {m} candidates makes that {min(1.0, m * floor):.3g}"
    return text + (f", not under alpha {alpha:g}: no candidate can win below {minimum} "
                   "replicates")


def fairness_replicates(c: Any, rule: Any, n_replicates: int, alpha: float) -> int | None:
    """Replicates at which an undetermined gap's (1 − 2 alpha) CI would exclude the bound
    with the rule's target power, or None (no room, no spread, or past the cap)."""
    z_ci = float(sps.norm.isf(alpha))
    z_pow = float(sps.norm.ppf(rule.target_power))
    room = abs(rule.max_gap - c.gap)
    half = (c.gap_ci[1] - c.gap) if c.gap <= rule.max_gap else (c.gap - c.gap_ci[0])
    if not (room > 0 and half > 0 and math.isfinite(room) and math.isfinite(half)):
        return None
    n = math.ceil(n_replicates * ((z_ci + z_pow) * (half / z_ci) / room) ** 2)
    return n if n <= MAX_REPLICATES else None


def gain_replicates(c: Any, rule: Any, alpha: float, m: int, n_replicates: int) -> int | None:
    """Replicates at which the gain would be significant, or shown under the margin, with the
    target power (whichever comes first), or None."""
    sd = c.standard_error * math.sqrt(n_replicates)
    win = replicates_for(c.difference, sd, alpha / m, rule.target_power) \
        if c.difference > 0 else None
    below = replicates_for(rule.margin - c.difference, sd, 2 * alpha, rule.target_power) \
        if c.difference < rule.margin else None
    options = [n for n in (win, below) if n is not None]
    return min(options) if options else None


def open_reasons(c: Any, rule: Any, alpha: float, m: int, n_replicates: int, minimum: int
                 ) -> tuple[int | None, tuple[str, ...], tuple[str, ...]]:
    """(replicates in all, blocker codes, blocker sentences) for an open candidate."""
    codes: list[str] = []
    words: list[str] = []
    needs: list[int | None] = []
    if n_replicates < minimum:
        codes.append("min_replicates")
        words.append(floor_text(n_replicates, alpha, m, minimum))
        needs.append(minimum)
    if c.fairness == "unknown":
        codes.append("seeds")
        words.append(f"{rule.fairness_metric} cannot be computed: fewer than 2 blueprints have "
                     f">= {rule.min_valuable} valuable seeds (TPR) or >= "
                     f"{rule.min_non_valuable} non-valuable seeds (FPR); more seeds of known "
                     "value are needed")
        needs.append(None)
    elif c.fairness == "undetermined":
        n = fairness_replicates(c, rule, n_replicates, alpha)
        codes.append("fairness")
        words.append(f"fairness undetermined: {rule.fairness_metric} {_fmt(c.gap)} debiased, "
                     f"{1 - 2 * alpha:.0%} CI [{_fmt(c.gap_ci[0])}, {_fmt(c.gap_ci[1])}] straddles the bound "
                     f"{rule.max_gap:g}" + (f"; ~{n} replicates would settle it" if n else
                                            f"; more than {MAX_REPLICATES} replicates would "
                                            "be needed to settle it"))
        needs.append(n)
    if rule.require_significance and not c.significant and not c.not_better \
            and n_replicates >= minimum:
        if c.difference > 0 and c.pvalue < alpha <= c.pvalue_adjusted:
            codes.append("multiplicity")
            words.append(f"multiplicity: its gain's p = {_fmt(c.pvalue, '.3g')} < {alpha:g}, but "
                         f"Holm over {m} candidates adjusts it to "
                         f"{_fmt(c.pvalue_adjusted, '.3g')}")
        n = gain_replicates(c, rule, alpha, m, n_replicates)
        codes.append("power")
        words.append(f"power: at the observed {rule.objective} gain {_fmt(c.difference, '+.3f')} "
                     f"(SE {_fmt(c.standard_error)}) " + (
                         f"~{max(n, n_replicates + 1)} replicates would decide it with "
                         f"{rule.target_power:.0%} power" if n is not None else
                         f"more than {MAX_REPLICATES} replicates would be needed"))
        needs.append(n)
    if not needs or any(n is None for n in needs):
        return None, tuple(codes), tuple(words)
    return max(max(needs), minimum, n_replicates + 1), tuple(codes), tuple(words)
