"""Resuming a Ray Tune sweep from what is durable: the Optuna journal and MLflow (Ray-free).

Tune's own experiment state is *not* used to resume. It is saved every few seconds, so after
SIGKILL it lags behind the Optuna journal (written at every ask and tell): restoring it
re-ran trials the journal already held as COMPLETE (``UpdateFinishedTrialError``), lost
trials it had never saved, and created more trials than ``num_samples``. Instead:

- **while the sweep runs**, a trial's end reaches Optuna only after its MLflow run is ended
  (the tracking callback tells the study from the writer thread, after ``end_run`` was
  written), and every Optuna trial carries its Tune trial id (user attribute). So a trial
  final in the journal is final in MLflow too;
- **on ``--resume``**, :func:`reconcile` walks the study once:

  - a trial final in Optuna (COMPLETE, PRUNED, FAIL) counts as done;
  - a RUNNING trial whose MLflow run FINISHED (the driver died between the two writes) is
    told COMPLETE with the objective values MLflow holds -- counted, never re-run;
  - a RUNNING trial whose run FAILED because the trial crashed is told FAIL -- counted;
  - any other RUNNING trial (interrupted, or never logged) is marked superseded, told FAIL,
    and its parameters are enqueued again, with the id of its MLflow run (if any) so that
    the re-run continues that run rather than adding one;
  - WAITING trials (grid points, earlier re-runs) stay queued: Optuna hands them out first.

  A fresh ``Tuner`` then runs ``num_samples - done`` trials on the same study (the sampler's
  seed is offset by the number of trials already in it, so a seeded sampler does not draw
  its first configs again). Hence: exactly ``num_samples`` counted trials, each config
  evaluated once, one MLflow run per trial, no FINISHED run changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper_ab.errors import ConfigError, EsperABError
from esper_ab.study.lifecycle import read_state
from esper_ab.tracking import END_REASON, PARENT, TRIAL_ID

__all__ = ["REUSE_RUN", "SUPERSEDED", "SWEEP_RUN", "TUNE_TRIAL_ID", "DurableSearch", "ResumePlan",
           "SweepIncomplete", "TrialRun", "count_final", "open_study", "reconcile",
           "resumable_state", "resumed_seed", "trial_runs"]

TUNE_TRIAL_ID = "esper_ab.tune_trial_id"   # Optuna user attr: the Tune trial it served
SWEEP_RUN = "esper_ab.sweep_run"           # Optuna user attr: the sweep's parent run id
REUSE_RUN = "esper_ab.reuse_run"           # on an enqueued re-run: the MLflow run to continue
SUPERSEDED = "esper_ab.superseded"         # study user attr: numbers of interrupted trials
CRASHED_PREFIX = "trial crashed"           # the end reason of a trial that errored out


@dataclass(frozen=True)
class TrialRun:
    """What MLflow holds of one trial run (read back by the Tune runner)."""

    run_id: str
    trial_id: str
    status: str
    reason: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ResumePlan:
    done: int                        # counted trials (final in Optuna after reconciling)
    waiting: int                     # queued configs Optuna hands out first
    rerun: int                       # interrupted configs queued again by this call
    told_from_mlflow: int            # RUNNING in Optuna, FINISHED in MLflow: told now
    n_trials: int                    # trials in the study before this call
    notes: list[str] = field(default_factory=list)

    def remaining(self, total: int) -> int:
        return max(0, total - self.done)


def open_study(spec: Any, storage: Any, sweep_run: str) -> Any:
    """The Optuna study of sweep run ``sweep_run`` (created empty when the driver died before
    Tune made it)."""
    import optuna

    from esper_ab.study.studies import optuna_directions, sweep_study_name

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=sweep_study_name(spec.name, sweep_run),
                               storage=storage, load_if_exists=True,
                               directions=optuna_directions(spec))


def _final(state: Any) -> bool:
    return state.is_finished()


def _superseded(study: Any) -> set[int]:
    return set(study.user_attrs.get(SUPERSEDED, []))


def _mine(t: Any, sweep_run: str) -> bool:
    """A trial of this sweep (a journal written before studies were per sweep run holds the
    trials of several sweeps in one study)."""
    return t.user_attrs.get(SWEEP_RUN) == sweep_run


def count_final(study: Any, sweep_run: str) -> int:
    """Trials of the sweep that count: finished in Optuna, not superseded by a re-run."""
    gone = _superseded(study)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if _mine(t, sweep_run) and _final(t.state) and t.number not in gone)


def _values(run: TrialRun, metrics: Sequence[str]) -> list[float] | None:
    vals = [run.metrics.get(m) for m in metrics]
    if any(v is None or not math.isfinite(float(v)) for v in vals):
        return None
    return [float(v) for v in vals]


def reconcile(study: Any, runs: Sequence[TrialRun], *, sweep_run: str,
              metrics: Sequence[str]) -> ResumePlan:
    """Bring the study's trials of sweep ``sweep_run`` in line with MLflow after a driver
    died (see the module doc). ``metrics``: the objective metric names (``g2.<metric>``),
    in the study's order."""
    from optuna.trial import TrialState

    by_tune_id = {r.trial_id: r for r in runs}
    trials = study.get_trials(deepcopy=False)
    gone = _superseded(study)
    done = waiting = rerun = told = 0
    notes: list[str] = []
    for t in trials:
        if t.state == TrialState.WAITING:
            waiting += 1
            continue
        if not _mine(t, sweep_run):
            continue
        if _final(t.state):
            done += 0 if t.number in gone else 1
            continue
        run = by_tune_id.get(t.user_attrs.get(TUNE_TRIAL_ID, ""))
        if run is not None and run.status == "FINISHED":
            values = _values(run, metrics)
            if values is None:
                study.tell(t.number, state=TrialState.FAIL)
            else:
                study.tell(t.number, values if len(values) > 1 else values[0])
            done += 1
            told += 1
            continue
        if run is not None and run.status == "FAILED" and run.reason.startswith(CRASHED_PREFIX):
            study.tell(t.number, state=TrialState.FAIL)
            done += 1
            continue
        reuse = run.run_id if run is not None else t.user_attrs.get(REUSE_RUN)
        gone.add(t.number)
        study.set_user_attr(SUPERSEDED, sorted(gone))   # before the tell: a kill in between
        study.tell(t.number, state=TrialState.FAIL)      # leaves it RUNNING and superseded
        attrs = {SWEEP_RUN: sweep_run, **({REUSE_RUN: reuse} if reuse else {})}
        study.enqueue_trial(dict(t.params), user_attrs=attrs, skip_if_exists=False)
        rerun += 1
        notes.append(f"trial {t.number} was interrupted: its config runs again"
                     + (f" (continuing MLflow run {reuse})" if reuse else ""))
    return ResumePlan(done=done, waiting=waiting + rerun, rerun=rerun, told_from_mlflow=told,
                      n_trials=len(trials), notes=notes)


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed of a resumed sweep: a seeded sampler restarted with its first seed
    would draw the configs of the first run again."""
    return (int(seed) * 1_000_003 + int(n_trials)) % (2 ** 31 - 1)


class DurableSearch:
    """Mixin for Tune's ``OptunaSearch`` (the Tune runner combines them): the study hears of
    a trial's end only once MLflow has written it -- the tracking callback calls
    :meth:`commit` from its writer thread after ``end_run`` -- and every trial carries its
    Tune trial id and sweep run as user attributes (see the module doc)."""

    def __init__(self, *args: Any, sweep_run: str, lockstep: Any | None = None,
                 numbered: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sweep_run, self._numbered = sweep_run, numbered
        self._ends: dict[str, tuple[Any, bool]] = {}
        self._lockstep = lockstep         # studies.Lockstep: draws independent of end order

    def suggest(self, trial_id: str) -> dict | None:
        if self._lockstep is not None and not self._lockstep.may_ask():
            return None                   # Tune asks again at its next step
        config = super().suggest(trial_id)
        ot = self._ot_trials.get(trial_id)
        if config is not None and ot is not None:
            ot.set_user_attr(TUNE_TRIAL_ID, trial_id)
            ot.set_user_attr(SWEEP_RUN, self._sweep_run)
        if config is not None and self._lockstep is not None:
            for tid in self._lockstep.asked(trial_id):
                self._tell(tid)
        return config

    def number(self, trial_id: str) -> int | None:
        """The trial's number in MLflow (``t003``): its Optuna number + 1, so that a trial's
        name does not depend on which of a round's trials Tune started first (None on a
        resume: re-runs take the lowest free numbers)."""
        ot = self._ot_trials.get(trial_id)
        return ot.number + 1 if ot is not None and self._numbered else None

    def reuse_run(self, trial_id: str) -> str | None:
        """The MLflow run an interrupted attempt of this config left (a resumed re-run)."""
        ot = self._ot_trials.get(trial_id)
        return ot.user_attrs.get(REUSE_RUN) if ot is not None else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self._ends[trial_id] = (result, error)    # told by commit(), after MLflow

    def commit(self, trial_id: str) -> None:
        if trial_id not in self._ends:
            return
        for tid in (self._lockstep.ended(trial_id) if self._lockstep is not None
                    else [trial_id]):
            self._tell(tid)

    def _tell(self, trial_id: str) -> None:
        result, error = self._ends.pop(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)
        if self._lockstep is not None:
            self._lockstep.told(trial_id)


class SweepIncomplete(EsperABError):
    """Tune returned without every trial ended, and no signal asked it to stop."""


def resumable_state(spec: Any, folder: Path, resume: bool) -> dict[str, Any]:
    """The sweep folder's state; with ``resume``, refuse what cannot be resumed."""
    state = read_state(folder)
    if not resume:
        return state
    if not state.get("sweep_run_id"):
        raise ConfigError(f"--resume: sweep {spec.name!r} has no resumable state in "
                          f"{folder}: run it without --resume first")
    if state.get("status") == "finished":
        raise ConfigError(f"--resume: sweep {spec.name!r} (run {state['sweep_run_id']}) "
                          "already finished: run it without --resume for a new one")
    if state.get("spec_hash") != spec.spec_hash():
        raise ConfigError(f"--resume: the spec of sweep {spec.name!r} changed since it "
                          "started: resume with the same file and options, or start anew")
    return state


def trial_runs(tracker: Any, parent: str) -> list[TrialRun]:
    """Every child run of ``parent`` as :class:`TrialRun` (through the tracker's client)."""
    client = tracker.client
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.`{PARENT}` = '{parent}'", max_results=50_000)
    return [TrialRun(r.info.run_id, r.data.tags.get(TRIAL_ID, ""), r.info.status,
                     r.data.tags.get(END_REASON, ""), dict(r.data.metrics)) for r in runs]
