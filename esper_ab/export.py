"""Export of a sweep's winner to ``winner.yaml``, and ``load_gate(spec)`` to use it.

``winner.yaml`` holds the gate (strategy, parameters, threshold(s) -- per blueprint where the
strategy calibrates them -- window, EMA, min epochs, clamp) with its calibration state and a
sha256 of it, the selection rule, the evidence (sweep run, trial run, key metrics with CIs,
the p-value against the baseline, raw and Holm-adjusted) and the package versions.

``load_gate(spec)`` takes what ``--gate`` and ``EsperLiteG2`` take -- a preset name
(``esper_lite_kasmina``), a plain gate file, or a winner file (schema and every integrity
hash verified) -- and returns a ready ``esper_ab.gate.Gate``; a training loop feeds it the
host's and each seed's ``GradStats``::

    gate = esper_ab.load_gate("winner.yaml")
    tracker = gate.tracker(blueprint="attention")
    for step in epoch:                      # after backward(), before clipping
        tracker.observe_step(seed_stats, host_stats)
    decision = tracker.end_epoch()          # decision.passed, decision.reason, ...

No mlflow here: ``esper-ab export`` reads the sweep through ``esper_ab.tracking``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

from esper_ab.errors import ConfigError, shown
from esper_ab.gate import (
    FORMAT,
    Gate,
    GateConfig,
    MetricEvidence,
    WinnerEvidence,
    WinnerFile,
    calibration_hash,
    load_gate_config,
    load_winner,
    resign_winner,
    write_winner,
)

__all__ = ["FORMAT", "WinnerEvidence", "WinnerFile", "build_winner", "calibration_hash",
           "load_gate", "load_winner", "resign_winner", "write_winner"]


def _clean(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _effective_thresholds(config: GateConfig) -> dict[str, float]:
    """Per-blueprint thresholds in the statistic's own units, where the strategy has them."""
    if config.thresholds:
        return {k: float(v) for k, v in config.thresholds.items()}
    if config.calibration is None:
        return {}
    gate = Gate(config)
    per_bp = getattr(gate.strategy, "thresholds", None)
    return {k: float(v) for k, v in per_bp(gate.threshold).items()} if callable(per_bp) else {}


def build_winner(*, gate: GateConfig, analysis: Mapping[str, Any], label: str,
                 experiment: str, sweep_run_id: str, trial_run_id: str, spec: Any,
                 versions: Mapping[str, str], git_commit: str, forced: bool) -> WinnerFile:
    """The winner document from the sweep's logged analysis (``Analysis.to_dict()``)."""
    objective = spec.selection.objective
    overall = analysis.get("overall", {}).get(label, {})
    disp = analysis.get("disparities", {}).get(label, {})
    metrics: dict[str, MetricEvidence] = {}
    for m in ("balanced_accuracy", "mcc", "realized_utility"):
        ci = overall.get(f"{m}_ci") or [None, None]
        metrics[m] = MetricEvidence(estimate=_clean(overall.get(m)), ci_low=_clean(ci[0]),
                                    ci_high=_clean(ci[1]))
    for m, d in disp.items():
        metrics[m] = MetricEvidence(estimate=_clean(d.get("estimate")),
                                    ci_low=_clean(d.get("ci_low")),
                                    ci_high=_clean(d.get("ci_high")))
    test = next((t for t in analysis.get("tests", [])
                 if t.get("name") == f"{objective}_vs_baseline" and t.get("strategy") == label
                 and t.get("blueprint") is None), {})
    verdict = analysis.get("verdict", {})
    _refuse_degenerate(verdict, label)
    said = [str(verdict.get(k) or "") for k in ("headline", "reason")]
    return WinnerFile(
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), gate=gate.to_dict(),
        calibration_sha256=calibration_hash(gate.calibration),
        per_blueprint_thresholds=_effective_thresholds(gate),
        selection=spec.selection.model_dump(mode="json"),
        evidence=WinnerEvidence(
            experiment=experiment, sweep_run_id=sweep_run_id, trial_run_id=trial_run_id,
            trial=label, fidelity=spec.fidelity, baseline=spec.baseline,
            replicates=list((analysis.get("confirmation") or {}).get("replicates")
                            or spec.replicates),   # the held-out ones that confirmed it
            objective=objective, metrics=metrics,
            pvalue_vs_baseline=_clean(test.get("pvalue")),
            pvalue_adjusted_vs_baseline=_clean(test.get("pvalue_adjusted")),
            adjustment=test.get("adjustment"), verdict="\n".join(s for s in said if s),
            verdict_kind=verdict.get("kind"), forced=forced),
        versions=dict(versions), git_commit=git_commit)


def _refuse_degenerate(verdict: Mapping[str, Any], label: str) -> None:
    """A gate that admits no seed, every seed or no valuable seed is never exported, not
    even with --force: it cannot be shipped."""
    cand = next((c for c in verdict.get("candidates", []) if c.get("strategy") == label), {})
    if cand.get("degenerate"):
        raise ConfigError(f"trial {label} is a degenerate gate (it {cand['degenerate']}): it is "
                          "never exported, even with --force; export another trial or widen "
                          "the sweep's threshold range")


def load_gate(spec: str | os.PathLike[str]) -> Gate:
    """A validated, ready-to-call G2 gate from a preset name, a plain gate file or an
    exported winner file (hash-checked; a ``--force`` export warns). The one loader behind
    ``--gate``, ``esper_ab.load_gate`` and ``EsperLiteG2``."""
    text = os.fspath(spec)
    config = load_gate_config(text)
    try:
        return Gate(config)
    except ConfigError as exc:
        raise ConfigError(f"gate {shown(text)}: {exc}") from None
