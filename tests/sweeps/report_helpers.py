"""A sweep analysis built in-process, without Ray or MLflow, for the report tests: the trials'
decisions come straight from replay of synthetic traces (round-tripped through CSV, as the
tracking store returns them)."""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace

import pandas as pd
from sweep_helpers import space

from esper_ab.gate import PRESETS
from esper_ab.replay import ReplayEvidence, synthetic_traces
from esper_ab.study.analysis import SweepAnalysis, SweepRecord, TrialRecord, analyze_sweep
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL, TrialParams, batch_trial_metrics

DESCRIPTION = "which gate is fair to <every> blueprint & predicts value"
TRIALS = (TrialParams("exponent", {"a": 0.3}, threshold=0.02),
          TrialParams("first_order_value", {"mode": "raw"}, threshold=0.0),
          TrialParams("exponent", {"a": 0.9}, threshold=0.5))


def sweep_analysis(trials=TRIALS, *, replicates: int = 8, n_boot: int = 100,
                   n_perm: int = 200) -> SweepAnalysis:
    spec = parse_sweep_spec(space(
        name="rep", replicates=replicates, description=DESCRIPTION,
        strategies=[{"name": "first_order_value"}, {"name": "exponent"}],
        selection={"top_k": 3, "max_gap": 1.0, "fairness_metric": "pass_rate_gap"}))
    ev = ReplayEvidence(synthetic_traces(replicates=range(replicates), epochs=12,
                                         steps_per_epoch=2, seeds_per_blueprint=2))
    reps = list(ev.replicates)
    base = ev.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL, replicates=reps)
    records = []
    for number, p in enumerate(trials, 1):
        cand = ev.decisions(p.gate_config(), label=CANDIDATE_LABEL, replicates=reps)
        table = pd.read_csv(io.StringIO(pd.concat([cand, base], ignore_index=True)
                                        .to_csv(index=False)))
        metrics = batch_trial_metrics(table, labels=[CANDIDATE_LABEL])[CANDIDATE_LABEL]
        records.append(TrialRecord(
            trial_id=f"trial{number}", run_id=f"run{number}", number=number,
            status="FINISHED", stopped_early=False,
            params={k: str(v) for k, v in p.as_params().items()},
            metrics={**metrics, "replicates_evaluated": float(replicates)},
            gate_config=p.gate_config(), decisions=table))
    record = SweepRecord(experiment="rep", sweep_run_id="run0", spec=spec,
                         trials=tuple(records), versions={"numpy": "x"}, git_commit="abc")
    return analyze_sweep(record, n_boot=n_boot, n_perm=n_perm)


def with_verdict(sa: SweepAnalysis, kind: str) -> SweepAnalysis:
    """The same analysis under a verdict of ``kind`` (a stand-in with the verdict's reading
    interface: kind, headline, summary_lines, reason, winner, candidates)."""
    v = sa.analysis.verdict
    fake = SimpleNamespace(
        kind=kind, headline=f"Verdict: {kind} <headline>", reason=f"{kind} & reason",
        winner=v.winner if kind == "winner" else None, candidates=v.candidates,
        summary_lines=lambda: [f"Verdict: {kind} <headline>", "  detail one", "  detail two"])
    winner = sa.winner if kind == "winner" else None
    return dataclasses.replace(sa, analysis=dataclasses.replace(sa.analysis, verdict=fake),
                               winner=winner)


def confirmed(sa: SweepAnalysis, replicates=range(8, 14)):
    """A held-out confirmation of ``sa``'s selected trials by replay on other replicates (as
    a sweep confirms them), and ``sa`` carrying its text: (sa, confirmation, table)."""
    from dataclasses import replace

    from esper_ab.study.confirmation import judge

    spec = sa.record.spec
    ev = ReplayEvidence(synthetic_traces(replicates=replicates, epochs=12, steps_per_epoch=2,
                                         seeds_per_blueprint=2))
    reps = list(ev.replicates)
    table = pd.concat([ev.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL,
                                    replicates=reps)]
                      + [ev.decisions(t.gate_config, label=t.label, replicates=reps)
                         for t in sa.selected], ignore_index=True)
    conf = judge(spec, table, fidelity="replay", candidates=[t.label for t in sa.selected],
                 n_boot=50, n_perm=50)
    sa = replace(sa, record=replace(sa.record, confirmed=f"{conf.verdict.headline}\nmore",
                                    confirmed_kind=conf.verdict.kind))
    return sa, conf, table
