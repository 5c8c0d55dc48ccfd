"""The multi-fidelity sweep (``fidelity: multi``): search at replay fidelity, confirm the
finalists in the closed loop on Ray. The closed-loop results are the authoritative ones.

1. **Traces.** Record the episodes of every workload x replicate the sweep needs (its
   replicates and ``confirm.replicates``) as Ray tasks (``esper_ab.study.recording``, cached and
   resumable), or read them from ``traces.path``.
2. **Replay search** (``esper_ab.study.replay_search``): thousands of configs in process on the
   search replicates only. The best ``max(confirm.top_k, selection.top_k)`` are re-run as full
   trials and logged as child runs, and the replay-stage summary (``report.html``,
   leaderboard, replay verdict) is logged, as for a replay sweep.
3. **Confirmation** (``esper_ab.study.confirmation``): the ``confirm.top_k`` finalists (with the
   calibration they were fitted with) and the baseline gate run in the closed loop on each
   held-out confirmation replicate (``esper_ab.study.holdout``: none was searched), one Ray
   task per config x workload x replicate, on CUDA when a GPU
   is assigned. One child run per config (tag ``esper_ab.role=confirmation``,
   ``esper_ab.fidelity=closed_loop``).
4. **Verdict and agreement.** The closed-loop decisions (admitted, blend epoch, realized gain
   over the no-seed control, the recorded episode's ``valuable``) go through the statistics
   module's paired analysis under the sweep's selection rule: that verdict is the sweep's
   (``sweep/analysis.json``, so ``esper-ab export`` exports the confirmed winner; the replay
   stage's analysis stays in ``replay/analysis.json``). ``esper_ab.study.agreement`` shows
   where replay and the loop agree (``fidelity/agreement.csv``, ``fidelity/per_seed.csv``,
   ``fidelity/report.html``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from esper_ab.errors import ConfigError
from esper_ab.study.spec import SweepSpec

__all__ = ["MultiFidelityOptions", "MultiFidelityOutcome", "run_multi_fidelity"]


@dataclass(frozen=True)
class MultiFidelityOptions:
    address: str | None = None          # None: embedded local Ray (or RAY_ADDRESS)
    tracking_uri: str | None = None     # None: sqlite:///mlflow.db in the working dir
    storage_dir: str | None = None      # None: <store dir>/esper_ab_sweeps
    num_samples: int | None = None      # replay configs searched (None: the spec's)
    batch_size: int = 64
    num_cpus: int | None = None         # local Ray only
    n_boot: int = 1000
    n_perm: int = 2000
    progress: Callable[[str, int, int], None] | None = field(default=None, compare=False)
    schedule_timeout_s: float = 60.0    # a Ray task that cannot be scheduled: fail
    cache_dir: str | None = None        # episodes, closed-loop runs; None: beside the folder
    verbose: int = 0                    # Ray's own output (worker logs) when > 0

    def __post_init__(self) -> None:
        from esper_ab.errors import bad_value

        if self.batch_size < 1:
            raise bad_value("batch_size", self.batch_size, "use 1 or more")


@dataclass(frozen=True, eq=False)
class MultiFidelityOutcome:
    sweep_run_id: str
    experiment: str
    status: str                         # FINISHED / FAILED
    reason: str                         # the closed-loop verdict (+ the replay stage's)
    winner: str | None                  # the confirmed winner's label, None: no winner
    search: Any                         # esper_ab.study.replay_search.ReplaySearch
    replay_summary: Any                 # esper_ab.study.analysis.SweepAnalysis (replay stage)
    closed_loop: Any                    # esper_ab.stats.Analysis (authoritative)
    agreement: pd.DataFrame             # one row per confirmed config
    per_seed: pd.DataFrame
    rank_agreement: dict[str, Any]
    compute: dict[str, float]           # CPU seconds and unit counts of what this call ran
    sweep_dir: Path
    wall_s: float
    confirmation: Any = None            # esper_ab.study.confirmation.Confirmation


def _traces(spec: SweepSpec, folder: Path, cache: Path, reps: list[int],
            progress: Any) -> tuple[Any, Any]:
    from esper_ab.study.recording import load_spec_traces, record_space

    if spec.traces.source == "record":
        rec = record_space(spec, out_dir=folder / "traces", cache_dir=cache, replicates=reps,
                           progress=progress)
        return load_spec_traces(spec, folder / "traces", replicates=reps), rec
    return load_spec_traces(spec, spec.traces.path, replicates=reps), None


def run_multi_fidelity(spec: SweepSpec, *,
                       options: MultiFidelityOptions = MultiFidelityOptions()
                       ) -> MultiFidelityOutcome:
    """Run the multi-fidelity sweep of ``spec``; every run ends FINISHED or FAILED."""
    from esper_ab.errors import DataError
    from esper_ab.progress import report_note
    from esper_ab.replay import ReplayEvidence
    from esper_ab.study.finalists import finalist_label, log_finalists, log_search
    from esper_ab.study.holdout import confirm_in_closed_loop
    from esper_ab.study.lifecycle import sweep_lifecycle
    from esper_ab.study.preflight import check_ray_address
    from esper_ab.study.replay_search import search_replay
    from esper_ab.study.runtime import (
        connect_ray,
        ensure_schedulable,
        plan_for_cluster,
        shutdown_ray,
        with_plan,
    )
    from esper_ab.study.space import space_summary
    from esper_ab.study.summary import summarize_sweep

    if spec.traces.source == "synthetic":
        raise ConfigError(f"sweep {spec.name!r}: fidelity multi confirms configs in the closed "
                          "loop, which needs real episodes: use traces: {source: record} "
                          "(or directory), not synthetic")
    t0 = time.perf_counter()
    spec = spec.model_copy(update={"fidelity": "multi"})
    if options.num_samples is not None:
        spec = spec.with_overrides(num_samples=options.num_samples)
    confirm_reps = spec.confirm_replicates
    check_ray_address(options.address)
    with sweep_lifecycle(spec, tracking_uri=options.tracking_uri,
                         storage_dir=options.storage_dir, what="multi-fidelity sweep") as life:
        tracker, folder = life.tracker, life.folder
        cache = Path(options.cache_dir) if options.cache_dir else \
            folder.parent / ".esper_ab_cache"
        # Ray and the resources first: a request the cluster cannot hold fails before any run.
        life.connected(connect_ray(options.address, num_cpus=options.num_cpus,
                                   verbose=options.verbose), shutdown_ray)
        plan = plan_for_cluster(spec, options.address)
        ensure_schedulable(plan, what="a Ray task", timeout_s=options.schedule_timeout_s)
        report_note(options.progress, plan.describe())
        spec = with_plan(spec, plan)
        parent = life.start(spec, space=space_summary(spec),
                            run_name=f"{spec.name}-multi-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"esper_ab.resources": plan.tag()})
        reps = spec.all_replicates
        traces, rec = _traces(spec, folder, cache, reps, options.progress)
        # The search sees the search replicates only; the confirmation replicates stay out.
        evidence = ReplayEvidence(traces.subset(spec.replicates), folds=spec.calibration_folds)
        search = search_replay(spec, evidence, folder=folder, batch_size=options.batch_size,
                               progress=options.progress, sweep_run=parent)
        log_search(tracker, parent, search)
        c0 = time.process_time()
        finalists = log_finalists(tracker, parent, spec, evidence, search,
                                  n=max(spec.confirm.top_k, spec.selection.top_k),
                                  tags={"esper_ab.fidelity": "replay"})
        replay_summary = summarize_sweep(tracker, spec.experiment_name, parent,
                                         n_boot=options.n_boot, n_perm=options.n_perm,
                                         log=True, progress=options.progress)
        finalist_cpu = time.process_time() - c0
        confirmed = finalists[:spec.confirm.top_k]
        if not confirmed:
            raise DataError(f"the replay search of sweep {spec.name!r} found no rankable "
                            f"config among {search.n_configs} (every objective undefined): "
                            "widen the space or check the traces")
        labels = {finalist_label(tracker, f): f for f in confirmed}
        conf, result = confirm_in_closed_loop(
            tracker, parent, spec, gates={k: f.result.gate_config for k, f in labels.items()},
            run_ids={k: f.run_id for k, f in labels.items()},
            search_rank={k: f.rank for k, f in labels.items()}, search_summary=replay_summary,
            cache=cache, n_boot=options.n_boot, n_perm=options.n_perm, traces=traces,
            progress=options.progress, compute={
                "episodes_recorded": rec.recorded if rec else 0,
                "episodes_cached": rec.cached if rec else len(reps) * len(spec.workloads),
                "episode_cpu_s": rec.compute_s if rec else 0.0,
                "replay_configs": search.n_configs, "replay_search_cpu_s": search.cpu_s,
                "replay_finalists_cpu_s": finalist_cpu})
        reason = (f"closed-loop confirmation (authoritative) of {len(confirmed)} finalist(s) "
                  f"+ baseline on {len(confirm_reps)} held-out replicate(s): "
                  f"{conf.verdict.reason} | replay stage ({search.n_configs} "
                  f"configs): {replay_summary.reason}")
        life.finish(reason)
        return MultiFidelityOutcome(
            parent, spec.experiment_name, "FINISHED", reason, conf.verdict.winner, search,
            replay_summary, conf.analysis, result["agreement"], result["per_seed"],
            result["ranks"], result["compute"], folder, time.perf_counter() - t0, conf)
