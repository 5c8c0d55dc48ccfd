"""The confirmation stage of every fidelity: the search's top-k judged on held-out replicates.

A sweep searches on ``spec.replicates`` only. Its ``confirm.top_k`` best configs (ranked by
the first objective, as the search stage's summary ranks them) and the baseline gate are then
judged on ``spec.confirm_replicates``, which no search step saw:

- by **replay** of the recorded confirmation replicates (``confirm.fidelity: replay``, the
  default outside ``fidelity: multi``): exact and cheap; a calibrating finalist keeps the
  calibration it was fitted with on the search replicates;
- in the **closed loop** (``confirm.fidelity: closed_loop``; the default of ``fidelity:
  multi``): ``confirm_in_closed_loop``, Ray tasks.

Multiplicity corrections run over the k confirmed candidates only. The confirmation's
analysis becomes the sweep's (``sweep/analysis.json``; ``esper-ab export`` exports its winner)
and the search stage's moves to ``search/``. Called by the in-process replay and
multi-fidelity sweeps (``esper_ab.fidelity``) and by the Ray Tune sweep
(``esper_ab.tune_driver.tune_runner``): ``confirm_finalists`` (replay),
``confirm_in_closed_loop`` (closed loop), ``confirm_tune_sweep`` (the Tune sweep's top trials).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esper_ab.errors import ConfigError, DataError
from esper_ab.gate import GateConfig
from esper_ab.study._logging import log_confirmation
from esper_ab.study.confirmation import Confirmation, confirm_by_replay, confirmation_spec
from esper_ab.study.recording import sweep_evidence
from esper_ab.study.spec import SweepSpec

__all__ = ["confirm_finalists", "confirm_in_closed_loop", "confirm_tune_sweep"]


def confirm_finalists(tracker: Any, parent: str, spec: SweepSpec, *,
                      gates: Mapping[str, GateConfig], run_ids: Mapping[str, str],
                      search_summary: Any, evidence: Any, n_boot: int, n_perm: int
                      ) -> Confirmation:
    """Judge ``gates`` (label -> fitted gate) by replay on ``evidence`` (the confirmation
    replicates' traces) and log the result as the sweep's verdict."""
    if spec.confirm_fidelity != "replay":
        raise ConfigError(f"sweep {spec.name!r}: confirm.fidelity {spec.confirm_fidelity} "
                          "runs Ray tasks: use 'esper-ab sweep' (fidelity multi or "
                          "closed_loop), or set confirm.fidelity: replay")
    conf = confirm_by_replay(spec, evidence, gates, n_boot=n_boot, n_perm=n_perm)
    log_confirmation(tracker, parent, conf, search_summary=search_summary, run_ids=run_ids)
    return conf


def _jobs(spec: SweepSpec, gates: dict[str, Any], reps: list[int]) -> list[Any]:
    from esper_ab.study.confirmation import ConfirmJob

    many = len(spec.workloads) > 1
    return [ConfirmJob(label, gate, entry.name, int(r), entry.episode_config(),
                       seed_prefix=f"{entry.name}:" if many else "")
            for label, gate in gates.items() for entry in spec.workloads for r in reps]


def confirm_in_closed_loop(tracker: Any, parent: str, spec: SweepSpec, *,
                           gates: dict[str, Any], run_ids: dict[str, str],
                           search_rank: dict[str, int], search_summary: Any, cache: Path,
                           n_boot: int, n_perm: int, traces: Any | None = None,
                           progress: Any | None = None,
                           compute: dict[str, float] | None = None
                           ) -> tuple[Any, dict[str, Any]]:
    """Run the candidates ``gates`` (label -> fitted gate) and the baseline gate in the closed
    loop on the confirmation replicates (Ray tasks; Ray is up), judge them (Holm over the
    candidates only) and log it all as the sweep's verdict. ``traces``: the confirmation
    replicates' recorded traces (recorded here when None). Returns (Confirmation, the
    agreement results)."""
    from esper_ab.gate import PRESETS
    from esper_ab.study._logging import analyze_and_log
    from esper_ab.study.agreement import closed_loop_decisions
    from esper_ab.study.confirmation import (
        check_disjoint,
        confirmation_spec,
        judge,
        judge_sequentially,
        run_confirmations,
        sequential_state,
    )
    from esper_ab.trial import BASELINE_LABEL

    confirm_reps = spec.confirm_replicates
    check_disjoint(spec.replicates, confirm_reps)
    if traces is None:
        traces = sweep_evidence(confirmation_spec(spec), cache_dir=cache).traces
    traces = traces.subset(confirm_reps)
    gates = {BASELINE_LABEL: PRESETS[spec.baseline],
             **{k: v for k, v in gates.items() if k != BASELINE_LABEL}}
    names = [k for k in gates if k != BASELINE_LABEL]
    if not spec.confirm.sequential:
        runs = run_confirmations(_jobs(spec, gates, confirm_reps), cache_dir=cache,
                                 cpu=spec.resources.cpu, gpu=spec.resources.gpu,
                                 progress=progress)
        closed = closed_loop_decisions(runs, traces.seeds)
        conf = judge(spec, closed, fidelity="closed_loop", candidates=names, n_boot=n_boot,
                     n_perm=n_perm)
    else:   # rounds: the first min_replicates, then one more replicate at a time
        runs, done = [], []
        for r in confirm_reps:
            done.append(r)
            if len(done) < min(spec.confirm.min_replicates, len(confirm_reps)) \
                    and r != confirm_reps[-1]:
                continue
            todo = [x for x in done if x not in {j.job.replicate for j in runs}]
            runs += run_confirmations(_jobs(spec, gates, todo), cache_dir=cache,
                                      cpu=spec.resources.cpu, gpu=spec.resources.gpu,
                                      progress=progress)
            closed = closed_loop_decisions(runs, traces.seeds)
            seq = sequential_state(spec, closed, candidates=names, order=done)
            if all(seq.settled(c, len(done)) != "open" for c in names):
                break
        conf = judge_sequentially(spec, closed, fidelity="closed_loop", candidates=names,
                                  order=done, n_boot=n_boot, n_perm=n_perm)
        runs = [x for x in runs if x.job.replicate in set(conf.replicates)]
        traces = traces.subset(list(conf.replicates))
    compute = {**(compute or {}),
               "closed_loop_runs": sum(not r.cached for r in runs),
               "closed_loop_runs_cached": sum(r.cached for r in runs),
               "closed_loop_cpu_s": sum(r.compute_s for r in runs if not r.cached)}
    result = analyze_and_log(tracker, parent, spec, traces=traces, runs=runs, gates=gates,
                             search_rank=search_rank, run_ids=run_ids,
                             replay_summary=search_summary, n_boot=n_boot, n_perm=n_perm,
                             compute=compute, analysis=conf.analysis)
    log_confirmation(tracker, parent, conf, search_summary=search_summary, run_ids=run_ids)
    return conf, result


def confirm_tune_sweep(tracker: Any, parent: str, spec: SweepSpec, summary: Any, *,
                       cache_dir: Path, n_boot: int, n_perm: int) -> Confirmation | None:
    """The confirmation stage of a Ray Tune sweep (Ray is up): the top ``confirm.top_k``
    complete trials of ``summary`` (an ``esper_ab.study.analysis.SweepAnalysis``) on the
    confirmation replicates. None when the search left no complete trial to confirm."""
    selected = list(summary.selected)[:spec.confirm.top_k]
    if not selected:
        return None
    missing = [t.label for t in selected if t.gate_config is None]
    if missing:
        raise DataError(f"trials {missing} have no trial/gate_config.json: re-run the sweep")
    gates = {t.label: t.gate_config for t in selected}
    run_ids = {t.label: t.run_id for t in selected}
    if spec.confirm_fidelity == "closed_loop":
        return confirm_in_closed_loop(
            tracker, parent, spec, gates=gates, run_ids=run_ids,
            search_rank={t.label: i for i, t in enumerate(selected, start=1)},
            search_summary=summary, cache=cache_dir, n_boot=n_boot, n_perm=n_perm)[0]
    evidence = sweep_evidence(confirmation_spec(spec), cache_dir=cache_dir)
    return confirm_finalists(tracker, parent, spec, gates=gates, run_ids=run_ids,
                             search_summary=summary, evidence=evidence, n_boot=n_boot,
                             n_perm=n_perm)
