"""The end of a multi-fidelity sweep: closed-loop analysis, agreement, MLflow logging.
Private to the study (``holdout``: the confirmation every driver calls); every MLflow write
goes through ``esper_ab.tracking``."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esper_ab.study.agreement import (
    agreement_table,
    closed_loop_decisions,
    format_agreement,
    per_seed_agreement,
    rank_agreement,
    render_fidelity_html,
    replay_predictions,
)
from esper_ab.study.analysis import analysis_text
from esper_ab.study.outcome import kind_of, stage_result
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import BASELINE_LABEL, batch_trial_metrics, metric_key


def _json(folder: Path, name: str, data: Any) -> None:
    (folder / name).write_text(json.dumps(data, indent=1, default=str, allow_nan=True))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def analyze_and_log(tracker: Any, parent: str, spec: SweepSpec, *, traces: Any,
                    runs: Sequence[Any], gates: Mapping[str, Any],
                    search_rank: Mapping[str, int], run_ids: Mapping[str, str],
                    replay_summary: Any, n_boot: int, n_perm: int,
                    compute: Mapping[str, float], analysis: Any | None = None
                    ) -> dict[str, Any]:
    """Analyze the closed-loop runs against the baseline (unless ``analysis`` is given),
    compare them with replay's predictions, log confirmation children and the parent's
    fidelity artifacts."""
    from esper_ab.stats import analyze

    objective = spec.selection.objective
    closed = closed_loop_decisions(runs, traces.seeds)
    if analysis is None:
        analysis = analyze(closed, baseline=BASELINE_LABEL, alpha=spec.selection.alpha,
                           rule=spec.selection.rule(), n_boot=n_boot, n_perm=n_perm)
    predicted = replay_predictions(traces, gates)
    scores = batch_trial_metrics(predicted, labels=list(gates))
    recorded = max(e.episode_config().incubation_epochs for e in spec.workloads)
    per_seed = per_seed_agreement(predicted, closed, recorded_epochs=recorded)
    realized = {k: float(analysis.metrics.overall.loc[k, objective]) for k in gates}
    table = agreement_table(per_seed, objective=objective, search_rank=search_rank,
                            predicted={k: scores[k][metric_key(objective)] for k in gates},
                            realized=realized)
    ranks = rank_agreement(table, objective)
    compute = {**compute, "closed_loop_cpu_s_per_run": (
        compute["closed_loop_cpu_s"] / compute["closed_loop_runs"]
        if compute.get("closed_loop_runs") else math.nan)}
    _log_confirmations(tracker, parent, runs, table, analysis, objective)
    verdict = analysis.verdict
    _log_parent(tracker, parent, spec=spec, closed=closed, per_seed=per_seed, table=table,
                ranks=ranks, analysis=analysis, replay_summary=replay_summary,
                compute=compute, objective=objective,
                winner_run=run_ids.get(verdict.winner or "", ""))
    return {"analysis": analysis, "agreement": table, "per_seed": per_seed, "ranks": ranks,
            "compute": compute, "text": format_agreement(table, ranks, objective=objective)}


def _log_confirmations(tracker: Any, parent: str, runs: Sequence[Any], table: Any,
                       analysis: Any, objective: str) -> None:
    import pandas as pd

    by_label: dict[str, list[Any]] = {}
    for r in runs:
        by_label.setdefault(r.job.label, []).append(r)
    rows = table.set_index("config")
    for label, mine in by_label.items():
        gate = mine[0].job.gate
        run = tracker.trial_run(
            parent, trial_id=f"confirm-{label}", run_name=f"confirm {label}",
            params={"config": label, "strategy": gate.strategy, "threshold": gate.threshold,
                    "window": gate.window, "ema_decay": gate.ema_decay,
                    "min_epochs": gate.min_epochs, "replicates": len(mine),
                    **{f"param.{k}": v for k, v in sorted(gate.strategy_params.items())}},
            tags={"esper_ab.role": "confirmation", "esper_ab.fidelity": "closed_loop",
                  "esper_ab.label": label,
                  "esper_ab.device": ",".join(sorted({r.device for r in mine}))})
        try:
            overall = analysis.metrics.overall.loc[label]
            row = rows.loc[label]
            metrics = {f"closed_loop.{m}": float(overall[m]) for m in
                       ("pass_rate", "tpr", "fpr", "balanced_accuracy", "mcc",
                        "realized_utility")}
            metrics.update({f"agreement.{k}": float(row[k]) for k in
                            ("admit_agreement", "epoch_agreement", "late_admits")
                            if _finite(float(row[k]))})
            metrics.update({"closed_loop.cpu_s": sum(r.compute_s for r in mine),
                            "closed_loop.runs_cached": sum(r.cached for r in mine)})
            tracker.log_metrics(run, metrics, step=0)
            folder = Path(tempfile.mkdtemp(prefix="esper_ab_confirm_"))
            pd.concat([r.table for r in mine], ignore_index=True).to_csv(
                folder / "closed_loop.csv", index=False)
            _json(folder, "gate_config.json", gate.to_dict())
            tracker.log_folder(run, str(folder), artifact_path="confirm", remove=True)
            tracker.end_run(run, "FINISHED", f"closed loop on {len(mine)} replicate run(s): "
                            f"{objective} {float(overall[objective]):.4g}")
        except BaseException as exc:
            tracker.end_run(run, "FAILED", f"{type(exc).__name__}: {str(exc)[:300]}")
            raise


def _log_parent(tracker: Any, parent: str, *, spec: SweepSpec, closed: Any, per_seed: Any,
                table: Any, ranks: Mapping[str, Any], analysis: Any, replay_summary: Any,
                compute: Mapping[str, Any], objective: str, winner_run: str) -> None:
    verdict = analysis.verdict
    replay_verdict = replay_summary.reason
    folder = Path(tempfile.mkdtemp(prefix="esper_ab_fidelity_"))
    table.to_csv(folder / "agreement.csv", index=False)
    per_seed.to_csv(folder / "per_seed.csv", index=False)
    closed.to_csv(folder / "closed_loop_decisions.csv", index=False)
    (folder / "closed_loop_analysis.txt").write_text(analysis.format_table())
    _json(folder, "rank_agreement.json", dict(ranks))
    _json(folder, "compute.json", dict(compute))
    (folder / "report.html").write_text(render_fidelity_html(
        sweep=spec.name, table=table, ranks=ranks, verdict=verdict.reason, kind=kind_of(verdict),
        replay_verdict=replay_verdict, compute=compute, objective=objective),
        encoding="utf-8")
    tracker.log_folder(parent, str(folder), artifact_path="fidelity", remove=True)
    # The replay stage's analysis moves to replay/; sweep/analysis.* become the closed
    # loop's (export reads them: the confirmed winner is the sweep's winner).
    replay_dir = Path(tempfile.mkdtemp(prefix="esper_ab_replay_"))
    if replay_summary.analysis is not None:
        _json(replay_dir, "analysis.json", replay_summary.analysis.to_dict())
        (replay_dir / "analysis.txt").write_text(replay_summary.analysis.format_table())
    (replay_dir / "verdict.txt").write_text(replay_verdict)
    tracker.log_folder(parent, str(replay_dir), artifact_path="replay", remove=True)
    sweep_dir = Path(tempfile.mkdtemp(prefix="esper_ab_sweep_"))
    _json(sweep_dir, "analysis.json", analysis.to_dict())
    (sweep_dir / "analysis.txt").write_text(analysis.format_table())
    tracker.log_folder(parent, str(sweep_dir), artifact_path="sweep", remove=True)
    metrics = {"fidelity.rank_spearman": ranks["spearman_rho"],
               "fidelity.rank_kendall": ranks["kendall_tau"],
               "fidelity.same_best": float(ranks["same_best"]),
               "fidelity.admit_agreement": float(per_seed["admit_agree"].astype(float).mean()),
               "fidelity.epoch_agreement": float(per_seed["epoch_agree"].dropna()
                                                 .astype(float).mean())
               if per_seed["epoch_agree"].notna().any() else math.nan,
               "fidelity.late_admits": float(per_seed["late_admit"].sum()),
               **{f"compute.{k}": v for k, v in compute.items()}}
    tracker.log_metrics(parent, {k: v for k, v in metrics.items() if _finite(v)}, step=0)
    tracker.set_tags(parent, {"esper_ab.verdict": verdict.reason[:4000],
                              "esper_ab.replay_verdict": replay_verdict[:4000],
                              "esper_ab.winner": verdict.winner or "",
                              "esper_ab.winner_run_id": winner_run})
    # the parent reads like the closed loop's result (its note, metrics and table)
    stage_metrics, tables, tags = stage_result(analysis, spec, stage="closed_loop", earlier=[
        f"replay stage: {getattr(replay_summary, 'headline', '') or replay_verdict}"])
    tracker.log_result(parent, metrics=stage_metrics, tables=tables, tags=tags)


def log_confirmation(tracker: Any, parent: str, conf: Any, *, search_summary: Any,
                     run_ids: Mapping[str, str]) -> None:
    """Log the held-out confirmation as the sweep's verdict.

    The search stage's analysis moves to ``search/`` (its p-values are optimistic: the
    trials were chosen on the replicates it tests); ``sweep/analysis.json`` becomes the
    confirmation's (``esper-ab export`` reads it), with a ``confirmation`` section naming
    the search and confirmation replicates; ``confirm/`` holds its decisions and split."""
    from esper_ab.study.confirmation import format_confirmation

    search_dir = Path(tempfile.mkdtemp(prefix="esper_ab_search_"))
    if search_summary.analysis is not None:
        _json(search_dir, "analysis.json", search_summary.analysis.to_dict())
        (search_dir / "analysis.txt").write_text(search_summary.analysis.format_table())
    (search_dir / "verdict.txt").write_text(search_summary.reason)
    tracker.log_folder(parent, str(search_dir), artifact_path="search", remove=True)
    text = format_confirmation(conf)
    confirm_dir = Path(tempfile.mkdtemp(prefix="esper_ab_confirm_"))
    conf.decisions.to_csv(confirm_dir / "decisions.csv", index=False)
    _json(confirm_dir, "split.json", conf.to_dict())
    (confirm_dir / "verdict.txt").write_text(text)
    tracker.log_folder(parent, str(confirm_dir), artifact_path="confirm", remove=True)
    sweep_dir = Path(tempfile.mkdtemp(prefix="esper_ab_sweep_"))
    _json(sweep_dir, "analysis.json", {**conf.analysis.to_dict(), "confirmation": conf.to_dict()})
    (sweep_dir / "analysis.txt").write_text(analysis_text(conf.analysis))
    conf.decisions.to_csv(sweep_dir / "decisions.csv", index=False)
    tracker.log_folder(parent, str(sweep_dir), artifact_path="sweep", remove=True)
    v = conf.verdict
    tracker.log_metrics(parent, {"confirm.replicates": len(conf.replicates),
                                 "confirm.replicates_planned": len(conf.planned),
                                 "confirm.candidates": len(conf.candidates)}, step=0)
    tracker.set_tags(parent, {"esper_ab.verdict": v.reason[:4000],
                              "esper_ab.verdict_kind": getattr(v, "kind", ""),
                              "esper_ab.search_verdict": search_summary.reason[:4000],
                              "esper_ab.confirmed_by": conf.fidelity,
                              "esper_ab.winner": v.winner or "",
                              "esper_ab.winner_run_id": run_ids.get(v.winner or "", "")})
    if conf.fidelity == "replay":
        # the parent reads like the confirmation's result: its note (MLflow's description),
        # confirm.* metrics and table; a closed-loop confirmation logged its own already
        stage_metrics, tables, tags = stage_result(
            conf.analysis, search_summary.record.spec, stage="confirm",
            earlier=[f"search stage: {search_summary.headline}"])
        tracker.log_result(parent, metrics=stage_metrics, tables=tables, tags=tags)
    _report_with_confirmation(tracker, parent, search_summary, text, getattr(v, "kind", ""),
                              conf)


def _report_with_confirmation(tracker: Any, parent: str, search_summary: Any, text: str,
                              kind: str, conf: Any = None) -> None:
    """``report.html`` again, the confirmed verdict first (the search stage logged it before
    the confirmation ran)."""
    from dataclasses import replace

    from esper_ab.study.report import render_html, sweep_figures

    sa = replace(search_summary, record=replace(search_summary.record, confirmed=text,
                                                confirmed_kind=kind))
    tracker.log_report(parent, render_html(sa, sweep_figures(sa), confirmation=conf))
