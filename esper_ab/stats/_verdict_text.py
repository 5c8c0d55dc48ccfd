"""The verdict in words: headline, summary lines, reasons, and what kind of gain it is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from esper_ab.stats._power import MAX_REPLICATES
from esper_ab.stats._undecided import floor_text


def _f(x: float | None, spec: str = ".3f") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    text = format(x + 0.0, spec)
    # a value that rounds to zero prints without a sign ("0.000", never "-0.000")
    return text.replace("-", "", 1) if float(text) == 0 and "e" not in text else text


def _ci(ci: Sequence[float] | None) -> str:
    if ci is None:
        return "[n/a]"
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def gain_kind(diff: float, matched_diff: float, matched_ci: Sequence[float], pass_rate: float,
              base_pass_rate: float, matched_label: str) -> tuple[str, str]:
    """("normalization" | "mixed" | "threshold", sentence) for a positive gain; ("", "")
    otherwise. The matched gain is the same objective difference with both strategies
    re-thresholded to one pass rate, with its paired cluster-bootstrap CI."""
    if not (math.isfinite(diff) and diff > 0 and math.isfinite(matched_diff)):
        return "", ""
    lo = matched_ci[0]
    at = f"at {matched_label}"
    own = (f"{diff:+.3f} at its own threshold (pass rate {_f(pass_rate, '.2f')}, baseline "
           f"{_f(base_pass_rate, '.2f')})")
    if math.isfinite(lo) and lo > 0 and matched_diff >= 0.5 * diff:
        return "normalization", (f"a normalization gain: {at} it is still {matched_diff:+.3f} "
                                 f"(CI {_ci(matched_ci)}), against {own}")
    if math.isfinite(lo) and lo > 0:
        return "mixed", (f"partly a threshold effect: {at} the gain shrinks to "
                         f"{matched_diff:+.3f} (CI {_ci(matched_ci)}) from {own}")
    return "threshold", (f"a threshold effect: {at} the gain is {matched_diff:+.3f} (CI "
                         f"{_ci(matched_ci)}, not above 0); the {own} comes from passing a "
                         "different share of seeds, not from a better statistic")


def _gap_text(c: Any, rule: Any, alpha: float) -> str:
    return (f"{rule.fairness_metric} {_f(c.gap)} debiased (raw {_f(c.gap_raw)}, "
            f"{1 - 2 * alpha:.0%} CI "
            f"{_ci(c.gap_ci)})")


def _fair_text(c: Any, rule: Any, alpha: float) -> str:
    """Why a winner's gap passes: its upper CI limit (or, by choice, its estimate) <= bound."""
    if rule.gap_bound == "estimate":
        return f"{_gap_text(c, rule, alpha)}: estimate <= {rule.max_gap:g}"
    return f"{_gap_text(c, rule, alpha)}: upper CI limit <= {rule.max_gap:g}"


def exclusion_text(c: Any, rule: Any, alpha: float) -> str:
    """Why a candidate is not eligible ('' when it is). Which blueprints were left out of
    the fairness gap, and why, is the same for every candidate (it depends on the seeds'
    values, not on the gate): ``reason_for`` and the details say it once."""
    parts = []
    if c.degenerate:
        parts.append(f"degenerate gate: it {c.degenerate}")
    if not math.isfinite(c.gap):
        parts.append(f"{rule.fairness_metric} undefined: fewer than 2 blueprints with "
                     f">= {rule.min_valuable} valuable and >= {rule.min_non_valuable} "
                     "non-valuable seeds")
    elif c.fairness == "unfair" or (not c.gap_ok and rule.gap_bound == "estimate"):
        which = "" if rule.gap_bound == "estimate" else "lower CI limit of "
        value = c.gap if rule.gap_bound == "estimate" else c.gap_ci[0]
        parts.append(f"unfair: {which}{_gap_text(c, rule, alpha)} = {_f(value)} > {rule.max_gap:g}")
    elif not c.gap_ok:
        parts.append(f"fairness undetermined: {_gap_text(c, rule, alpha)} straddles the bound "
                     f"{rule.max_gap:g}")
    if not c.fair_vs_baseline_ok:
        parts.append(f"less fair than the baseline: {rule.fairness_metric} "
                     f"{_f(c.gap_vs_baseline, '+.3f')} debiased vs baseline (raw-gap sign-flip "
                     "test), one-sided p = "
                     f"{_f(c.gap_vs_baseline_pvalue, '.3g')} < {alpha:g}")
    if not math.isfinite(c.pvalue) and rule.require_significance:
        parts.append("no replicate holds both it and the baseline: evaluate both on the same "
                     "replicates")
    elif not c.significant:
        eq = c.equivalence_ci
        ci = (f", {1 - 2 * alpha:.0%} CI {_ci(eq)}" if math.isfinite(eq[0])
              and math.isfinite(eq[1]) else "")
        parts.append(f"{rule.objective} {_f(c.difference, '+.3f')} vs baseline{ci}, "
                     f"Holm-adjusted p = {_f(c.pvalue_adjusted, '.3g')} (a winner needs a gain "
                     f"with p < {alpha:g})")
    return "; ".join(parts)


def _equivalence(c: Any, rule: Any, alpha: float) -> str:
    lvl = f"{1 - 2 * alpha:.0%}"
    eq = c.equivalence_ci
    tail = (f"equivalent within ±{rule.margin:g}" if eq[0] > -rule.margin
            else f"below +{rule.margin:g}")
    return (f"{c.strategy} {rule.objective} {_f(c.difference, '+.3f')}, {lvl} CI "
            f"{_ci(eq)}: {tail}")


def _status_line(c: Any, rule: Any, alpha: float) -> str:
    if c.status == "eligible":
        return f"  {c.strategy}: eligible ({rule.objective} {_f(c.difference, '+.3f')})"
    if c.status == "not_better":
        return f"  {c.strategy}: not better: {_equivalence(c, rule, alpha)}"
    if c.status == "open":
        n = c.replicates_needed
        more = (f"~{n} replicates in all would decide it" if n is not None
                else "more seeds of known value per blueprint would decide it"
                if not math.isfinite(c.gap)
                else f"more than {MAX_REPLICATES} replicates would be needed")
        blocked = f" (blocked by: {', '.join(c.blockers)})" if c.blockers else ""
        return f"  {c.strategy}: open: {c.why}{blocked}; {more}"
    return f"  {c.strategy}: excluded: {c.why}"


def headline_for(kind: str, best: Any, cands: Sequence[Any], *, baseline: str, rule: Any,
                 alpha: float, base_value: float, n_replicates: int, needed: int | None,
                 left_out: str, minimum: int = 1, m: int = 1,
                 missing: dict[str, tuple[str, ...]] | None = None,
                 blocking: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    obj = rule.objective
    others = [c for c in cands if c.strategy != baseline]
    lines: list[str] = []
    if kind == "winner":
        short = {"normalization": "a normalization gain", "mixed": "partly a threshold effect",
                 "threshold": "a threshold effect"}.get(best.gain_kind, "")
        head = (f"Verdict: winner {best.strategy}: {obj} {_f(best.objective_value)} vs "
                f"{_f(base_value)} for the baseline {baseline!r} (gain "
                f"{_f(best.difference, '+.3f')}, CI {_ci(best.ci)}")
        head += (f", Holm-adjusted p = {_f(best.pvalue_adjusted, '.3g')})"
                 if rule.require_significance else ")")
        if short:
            head += f"; {short}"
        lines.append(f"  fairness: {_fair_text(best, rule, alpha)}; debiased difference vs baseline "
                     f"{_f(best.gap_vs_baseline, '+.3f')} (one-sided p = "
                     f"{_f(best.gap_vs_baseline_pvalue, '.3g')})")
        if best.gain_words:
            lines.append(f"  gain: {best.gain_words}")
        rest = [c for c in others if c is not best]
        if rest:
            lines.append("  others: " + " | ".join(
                _status_line(c, rule, alpha).strip() for c in rest))
    elif kind == "undecided":
        head = "Verdict: undecided: " + undecided_text(
            cands, baseline=baseline, n_replicates=n_replicates, needed=needed,
            minimum=minimum, alpha=alpha, m=m, blocking=blocking)
        if blocking and best is not None:
            head += (f"; {best.strategy} is eligible ({obj} {_f(best.objective_value)}), but "
                     f"{', '.join(blocking)} has a better {obj} and may yet be fair")
    else:
        nb = sorted((c for c in others if c.status == "not_better"),
                    key=lambda c: -c.equivalence_ci[1])
        excluded = [c for c in others if c.status == "excluded"]
        if not others:
            head = f"Verdict: not better than the baseline {baseline!r}: the table holds no other strategy"
        elif best is not None and best.strategy == baseline:
            head = (f"Verdict: not better than the baseline {baseline!r}: it has the best {obj} "
                    f"({_f(base_value)}) among the eligible strategies")
        elif nb:
            head = (f"Verdict: not better than the baseline {baseline!r}: no candidate gains "
                    f"{rule.margin:g} or more in {obj} ({_equivalence(nb[0], rule, alpha)})")
            if excluded:
                head += f"; {len(excluded)} excluded"
        else:
            head = (f"Verdict: not better than the baseline {baseline!r}: no candidate is "
                    f"eligible ({len(excluded)} excluded: "
                    + "; ".join(f"{c.strategy}: {c.why.split(';')[0]}" for c in excluded[:3])
                    + ("; ..." if len(excluded) > 3 else "") + ")")
            if excluded and all(c.not_better for c in excluded):
                # the margin answers too: none would be better even if it were eligible
                top = max(excluded, key=lambda c: c.equivalence_ci[1])
                head += (f"; and none gains {rule.margin:g} or more in {obj} either "
                         f"(largest upper {1 - 2 * alpha:.0%} CI limit "
                         f"{_f(top.equivalence_ci[1], '+.3f')}, {top.strategy})")
    if kind != "winner":
        lines += [_status_line(c, rule, alpha) for c in others]
    lines.append(f"  blueprints: {left_out} (a blueprint enters TPR with >= "
                 f"{rule.min_valuable} valuable seeds, FPR with >= {rule.min_non_valuable} "
                 "non-valuable seeds)")
    for s, reps in (missing or {}).items():
        lines.append(f"  missing: {s} has no seed in replicate(s) {', '.join(reps)}: they "
                     "are left out of its paired comparisons")
    return head, lines


def undecided_text(cands: Sequence[Any], *, baseline: str, n_replicates: int,
                   needed: int | None, minimum: int, alpha: float, m: int,
                   blocking: tuple[str, ...] = ()) -> str:
    """What blocks the answer, and the replicates (in all, more than now) that would decide
    it, or why no replicate count would."""
    if n_replicates < minimum:
        return (f"{floor_text(n_replicates, alpha, m, minimum)}; at least {needed} replicates "
                f"in all are needed ({n_replicates} now)")
    open_ = sorted((c for c in cands if c.status == "open" and c.strategy != baseline
                    and (not blocking or c.strategy in blocking)),
                   key=lambda c: (c.replicates_needed is None, c.replicates_needed or 0,
                                  c.strategy))
    c = open_[0]
    why = "; ".join(c.blocker_text) or "its gain and fairness are both open"
    who = f"{c.strategy}: {why}"
    if len(open_) > 1:
        who += f" (and {len(open_) - 1} more open candidate(s))"
    if needed is not None:
        return (f"{who}; about {needed - n_replicates} more replicates needed "
                f"({n_replicates} now, ~{needed} in all)")
    if "seeds" in c.blockers:
        return f"{who}; no replicate count alone decides it"
    return (f"{who}; no practical number of replicates (more than {MAX_REPLICATES}) decides "
            "it: it is practically no better")


def reason_for(kind: str, best: Any, cands: Sequence[Any], *, baseline: str, rule: Any,
               alpha: float, base_value: float, left_out: str) -> str:
    obj = rule.objective
    no_winner = "no strategy beats the baseline"
    if kind == "winner":
        reason = (f"{best.strategy} beats the baseline {baseline!r}: {obj} "
                  f"{_f(best.objective_value)} vs {_f(base_value)} (difference "
                  f"{_f(best.difference, '+.3f')}, CI {_ci(best.ci)}")
        if rule.require_significance:
            reason += f", Holm-adjusted p = {_f(best.pvalue_adjusted, '.3g')} < {alpha:g}"
        reason += f"); {_fair_text(best, rule, alpha)}"
        if best.gain_words:
            reason += f"; {best.gain_words}"
        also = [c for c in cands if c.status == "eligible" and c is not best]
        if also:
            reason += "; also eligible: " + ", ".join(
                f"{c.strategy} ({obj} {_f(c.objective_value)})" for c in also)
        return reason
    others = [c for c in cands if c.strategy != baseline]
    if not others:
        return f"{no_winner} {baseline!r}: the table holds no other strategy"
    parts = []
    for c in others:
        if c.status == "not_better":
            parts.append(f"{c.strategy}: not better ({_equivalence(c, rule, alpha)})"
                         + (f"; {c.why}" if c.why else ""))
        else:
            parts.append(f"{c.strategy}: {c.why or c.status}")
    tail = (f" | blueprints: {left_out}" if any(not math.isfinite(c.gap) for c in others)
            else "")
    return f"{no_winner} {baseline!r} ({obj} {_f(base_value)}): " + " | ".join(parts) + tail
