"""A replay search's finalists, tracked: the search logged on the parent run and its best
configs re-run as full trials, one child run each.

Shared by the in-process replay and multi-fidelity sweeps (``esper_ab.fidelity``) and by the
batched replay trials of a Ray Tune sweep (``esper_ab.tune_driver.batches``). Every MLflow
write goes through ``esper_ab.tracking``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_ab.study.replay_search import ReplaySearch, rank_trials
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import (
    Evidence,
    TrialParams,
    TrialResult,
    iter_trial,
    result_from_step,
    write_trial_artifacts,
)

__all__ = ["Finalist", "finalist_label", "log_finalists", "log_search"]


@dataclass(frozen=True, eq=False)
class Finalist:
    """A top config re-run as a full trial and logged as a child run."""

    rank: int
    number: int                  # its Optuna trial number in the replay study
    params: TrialParams
    result: TrialResult
    run_id: str


def log_search(tracker: Any, parent: str, search: ReplaySearch) -> None:
    """The search's speed as parent metrics and its whole trial table as artifacts."""
    ranked = rank_trials(search.spec, search.trials)
    tracker.log_metrics(parent, {
        "replay.configs": search.n_configs, "replay.configs_failed":
            int((search.trials["state"] == "FAIL").sum()) if search.n_configs else 0,
        "replay.search_wall_s": search.wall_s, "replay.search_cpu_s": search.cpu_s,
        "replay.configs_per_s": search.configs_per_s,
        "replay.replicates": search.n_replicates}, step=0)
    tracker.set_tags(parent, {"esper_ab.search": "optuna-in-process",
                              "esper_ab.optuna_study": search.study_name,
                              "esper_ab.optuna_journal": str(search.journal)})
    folder = Path(tempfile.mkdtemp(prefix="esper_ab_replay_"))
    search.trials.to_parquet(folder / "trials.parquet", index=False)
    ranked.head(100).to_csv(folder / "trials_top.csv", index=False)
    tracker.log_folder(parent, str(folder), artifact_path="replay", remove=True)


def log_finalists(tracker: Any, parent: str, spec: SweepSpec, evidence: Evidence,
                  search: ReplaySearch, *, n: int, tags: dict[str, str] | None = None
                  ) -> list[Finalist]:
    """Re-run the ``n`` best configs as full trials and log each as a child run."""
    out: list[Finalist] = []
    ranked = rank_trials(spec, search.trials).head(n)
    total = len(evidence.replicates)
    for rank, number in enumerate(ranked["number"].astype(int), start=1):
        params = search.params[number]
        run = tracker.trial_run(parent, trial_id=f"replay-{number}", run_name=params.strategy,
                                params={**params.as_params(), "trial_id": f"replay-{number}",
                                        "optuna_trial": number},
                                tags={"esper_ab.label": params.label(),
                                      "esper_ab.replay_rank": str(rank), **(tags or {})})
        try:
            last = None
            for step in iter_trial(params, evidence, baseline=spec.baseline,
                                   alpha=spec.selection.alpha, n_boot=200, n_perm=500):
                tracker.log_metrics(run, {**step.metrics,
                                          "replicates_evaluated": step.replicates_evaluated},
                                    step=step.replicates_evaluated)
                last = step
            result = result_from_step(params, last, evidence)
            folder = write_trial_artifacts(tempfile.mkdtemp(prefix="esper_ab_trial_"), result)
            tracker.log_trial_folder(run, str(folder), remove=True)
            tracker.end_run(run, "FINISHED", f"completed all {total} replicates (replay "
                            f"search rank {rank} of {search.n_configs} configs)")
        except BaseException as exc:
            tracker.end_run(run, "FAILED", f"finalist failed: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}")
            raise
        out.append(Finalist(rank, number, params, result, run))
    return out


def finalist_label(tracker: Any, finalist: Finalist) -> str:
    """The finalist's label in the sweep analysis (``t<number>-<strategy>``)."""
    number = int(tracker.run_tags(finalist.run_id).get("esper_ab.trial_number", 0))
    return f"t{number:03d}-{finalist.params.strategy}"
