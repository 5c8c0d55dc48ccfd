"""A replay-fidelity sweep, tracked in MLflow like any other sweep (``esper-ab replay``).

``run_replay_sweep(spec)`` runs ``esper_ab.study.replay_search`` (thousands of configs in process,
no Ray) and logs it through ``esper_ab.tracking``:

- one parent run (tags ``esper_ab.role=sweep``, ``esper_ab.fidelity=replay``,
  ``esper_ab.search=optuna-in-process``) holding the resolved spec, the search space, the
  versions, the search's speed (``replay.configs``, ``replay.configs_per_s``, ...) and the
  **whole trial table** as ``replay/trials.parquet`` (+ ``replay/trials_top.csv``, the best
  100, readable in the UI);
- one nested child run per **finalist** only: the ``finalists`` best configs (default: the
  selection's ``top_k``), each re-run as a full trial (``esper_ab.trial.iter_trial``: the
  per-replicate curve, the paired analysis with p-values, the decision tables), exactly what
  a Ray sweep's child holds. A child per config was measured at about 0.1-0.2 s of MLflow
  writes on sqlite, which would take longer than the whole search of thousands of configs,
  hence this compact form;
- then the sweep summary (``esper_ab.study.summary``: leaderboard, paired analysis of the
  top trials against the baseline, plots, ``report.html``, verdict), as after a Ray sweep;
- then, when the space holds replicates out (``replicates: {search: ..., confirm: ...}``), the
  **confirmation** (``esper_ab.study.holdout.confirm_finalists``): the ``confirm.top_k``
  finalists and the baseline replayed on the held-out replicates, Holm over those k only. Its
  verdict is the sweep's (``sweep/analysis.json``); the search stage's moves to ``search/``.
  The search never sees a confirmation replicate (``require_search_only``).

Every run ends FINISHED or FAILED with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper_ab.errors import ConfigError, DataError
from esper_ab.study.confirmation import Confirmation, confirmation_spec
from esper_ab.study.finalists import Finalist, finalist_label, log_finalists, log_search
from esper_ab.study.holdout import confirm_finalists
from esper_ab.study.replay_search import ReplaySearch, search_replay
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import Evidence

__all__ = ["ReplaySweepOptions", "ReplaySweepOutcome", "require_search_only",
           "run_replay_sweep"]


@dataclass(frozen=True)
class ReplaySweepOptions:
    tracking_uri: str | None = None     # None: sqlite:///mlflow.db in the working dir
    storage_dir: str | None = None      # None: <store dir>/esper_ab_sweeps
    num_samples: int | None = None      # None: the spec's
    batch_size: int = 64
    finalists: int | None = None        # child runs; None: the selection's top_k
    n_boot: int = 1000                  # the final cross-trial analysis
    n_perm: int = 2000
    progress: Callable[[str, int, int], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        from esper_ab.errors import bad_value

        if self.batch_size < 1:
            raise bad_value("batch_size", self.batch_size, "use 1 or more")
        if self.finalists is not None and self.finalists < 1:
            raise bad_value("--finalists", self.finalists, "use 1 or more")


@dataclass(frozen=True, eq=False)
class ReplaySweepOutcome:
    sweep_run_id: str
    experiment: str
    status: str                  # FINISHED / FAILED
    reason: str
    search: ReplaySearch
    finalists: tuple[Finalist, ...]
    analysis: Any | None         # esper_ab.study.analysis.SweepAnalysis (search stage)
    sweep_dir: Path
    wall_s: float
    confirmation: Confirmation | None = None   # the held-out verdict (authoritative)


def require_search_only(spec: SweepSpec, evidence: Any) -> None:
    """Refuse search evidence that holds a confirmation replicate."""
    seen = sorted(set(int(r) for r in evidence.replicates) & set(spec.confirm_replicates))
    if seen:
        raise DataError(f"the search evidence holds confirmation replicates {seen}: give the "
                        f"search only its replicates {spec.replicates}")


def _evidence(spec: SweepSpec, folder: Path) -> Evidence:
    from esper_ab.replay import evidence_for_spec

    return evidence_for_spec(spec, cache_dir=folder.parent / ".esper_ab_cache")


def run_replay_sweep(spec: SweepSpec, *, evidence: Evidence | None = None,
                     confirm_evidence: Evidence | None = None,
                     options: ReplaySweepOptions = ReplaySweepOptions()) -> ReplaySweepOutcome:
    """Search ``spec`` at replay fidelity, track it, analyze it, confirm its finalists on the
    held-out replicates; every run ends FINISHED or FAILED. ``evidence`` (the search
    replicates) and ``confirm_evidence`` (the confirmation replicates) default to the spec's
    ``traces`` source."""
    from esper_ab.study.lifecycle import sweep_lifecycle
    from esper_ab.study.space import space_summary
    from esper_ab.study.summary import summarize_sweep

    t0 = time.perf_counter()
    spec = spec.model_copy(update={"fidelity": "replay"})
    if options.num_samples is not None:
        spec = spec.with_overrides(num_samples=options.num_samples)
    if spec.confirm_fidelity not in (None, "replay"):
        raise ConfigError(f"sweep {spec.name!r}: confirm.fidelity {spec.confirm_fidelity} runs "
                          "Ray tasks: use 'esper-ab sweep' (fidelity multi), or set "
                          "confirm.fidelity: replay")
    if evidence is not None:
        require_search_only(spec, evidence)
    with sweep_lifecycle(spec, tracking_uri=options.tracking_uri,
                         storage_dir=options.storage_dir, what="replay sweep") as life:
        tracker, folder = life.tracker, life.folder
        parent = life.start(spec, space=space_summary(spec),
                            run_name=f"{spec.name}-replay-{time.strftime('%Y%m%d-%H%M%S')}")
        if evidence is None:
            evidence = _evidence(spec, folder)
        require_search_only(spec, evidence)
        search = search_replay(spec, evidence, folder=folder, batch_size=options.batch_size,
                               progress=options.progress, sweep_run=parent)
        log_search(tracker, parent, search)
        n = max(options.finalists or spec.selection.top_k,
                spec.confirm.top_k if spec.confirm_fidelity else 0)
        finalists = log_finalists(tracker, parent, spec, evidence, search, n=n)
        analysis = summarize_sweep(tracker, spec.experiment_name, parent, n_boot=options.n_boot,
                                   n_perm=options.n_perm, log=True, progress=options.progress)
        reason = (f"replay search of {search.n_configs} configs "
                  f"({search.configs_per_s:.0f} configs/s); {analysis.reason}")
        confirmation = None
        if spec.confirm_fidelity and finalists:
            if confirm_evidence is None:
                confirm_evidence = _evidence(confirmation_spec(spec), folder)
            top = finalists[:spec.confirm.top_k]
            labels = {finalist_label(tracker, f): f for f in top}
            confirmation = confirm_finalists(
                tracker, parent, spec, gates={k: f.result.gate_config for k, f in labels.items()},
                run_ids={k: f.run_id for k, f in labels.items()}, search_summary=analysis,
                evidence=confirm_evidence, n_boot=options.n_boot, n_perm=options.n_perm)
            reason = (f"confirmed by replay on held-out replicates "
                      f"{list(confirmation.replicates)}: {confirmation.verdict.reason} | search "
                      f"stage: {reason}")
        life.finish(reason)
        return ReplaySweepOutcome(parent, spec.experiment_name, "FINISHED", reason, search,
                                  tuple(finalists), analysis, folder,
                                  time.perf_counter() - t0, confirmation)
