"""Stage 8c, fidelity: cheap replay search, expensive closed-loop confirmation.

- ``recording``: record a space's episodes as Ray tasks (parallel, resumable).
- ``search``: the in-process Optuna search over replay (batched asks, one scoring pass).
- ``replay_sweep``: that search tracked in MLflow (parent, finalists, trial table).
- ``confirmation``: the held-out verdict (``judge``, ``confirm_by_replay``) and closed-loop
  runs of the finalists as Ray tasks.
- ``multi``: replay search then closed-loop confirmation, with its verdict.
- ``holdout``: the confirmation stage of a Ray Tune sweep (replay or closed loop).
- ``agreement``: how well replay predicted the closed loop.
"""

from esper_ab.fidelity.agreement import agreement_table, format_agreement, render_fidelity_html
from esper_ab.fidelity.confirmation import (
    Confirmation,
    ConfirmJob,
    confirm_by_replay,
    confirmation_spec,
    format_confirmation,
    judge,
    run_confirmations,
)
from esper_ab.fidelity.holdout import confirm_tune_sweep
from esper_ab.fidelity.multi import MultiFidelityOptions, confirm_in_closed_loop, run_multi_fidelity
from esper_ab.fidelity.recording import (
    episode_jobs,
    load_spec_traces,
    record_space,
    sweep_evidence,
)
from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
from esper_ab.fidelity.search import rank_trials, replay_study_name, search_replay

__all__ = [
    "ConfirmJob",
    "Confirmation",
    "confirm_by_replay",
    "confirm_in_closed_loop",
    "confirm_tune_sweep",
    "confirmation_spec",
    "format_confirmation",
    "judge",
    "MultiFidelityOptions",
    "ReplaySweepOptions",
    "agreement_table",
    "episode_jobs",
    "format_agreement",
    "load_spec_traces",
    "rank_trials",
    "record_space",
    "sweep_evidence",
    "render_fidelity_html",
    "replay_study_name",
    "run_confirmations",
    "run_multi_fidelity",
    "run_replay_sweep",
    "search_replay",
]
