"""The confirmation stage of every fidelity: the search's top-k judged on held-out replicates.

A sweep searches on ``spec.replicates`` only. Its ``confirm.top_k`` best configs (ranked by
the first objective, as the search stage's summary ranks them) and the baseline gate are then
judged on ``spec.confirm_replicates``, which no search step saw:

- by **replay** of the recorded confirmation replicates (``confirm.fidelity: replay``, the
  default outside ``fidelity: multi``): exact and cheap; a calibrating finalist keeps the
  calibration it was fitted with on the search replicates;
- in the **closed loop** (``confirm.fidelity: closed_loop``; the default of ``fidelity:
  multi``): ``esper_ab.fidelity.multi.confirm_in_closed_loop``, Ray tasks.

Multiplicity corrections run over the k confirmed candidates only. The confirmation's
analysis becomes the sweep's (``sweep/analysis.json``; ``esper-ab export`` exports its winner)
and the search stage's moves to ``search/``. Called by the in-process replay sweep
(``esper_ab.fidelity.replay_sweep``) and by the Ray Tune sweep (``esper_ab.sweeps.tune_runner``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esper_ab.errors import DataError
from esper_ab.fidelity.confirmation import Confirmation, confirmation_spec
from esper_ab.fidelity.multi import confirm_in_closed_loop
from esper_ab.fidelity.recording import sweep_evidence
from esper_ab.fidelity.replay_sweep import confirm_finalists
from esper_ab.sweeps.spec import SweepSpec

__all__ = ["confirm_tune_sweep"]


def confirm_tune_sweep(tracker: Any, parent: str, spec: SweepSpec, summary: Any, *,
                       cache_dir: Path, n_boot: int, n_perm: int) -> Confirmation | None:
    """The confirmation stage of a Ray Tune sweep (Ray is up): the top ``confirm.top_k``
    complete trials of ``summary`` (an ``esper_ab.sweeps.analysis.SweepAnalysis``) on the
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
