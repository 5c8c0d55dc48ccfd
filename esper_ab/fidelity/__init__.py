"""Stage 8c, fidelity: the in-process sweep drivers (no Ray Tune).

- ``replay_sweep``: a replay-fidelity sweep, searched in process and tracked in MLflow
  (``esper-ab replay``), its finalists confirmed by replay on held-out replicates.
- ``multi``: replay search, then the finalists confirmed in the closed loop on Ray tasks
  (``fidelity: multi``), with its verdict and the replay-vs-loop agreement.

What they share with the Ray Tune driver (the replay search, episode recording, the
confirmation on held-out replicates, finalist logging, the agreement) lives in the study
foundation, ``esper_ab.study``. This package never imports ``esper_ab.tune_driver``.
"""

from esper_ab.fidelity.multi import MultiFidelityOptions, MultiFidelityOutcome, run_multi_fidelity
from esper_ab.fidelity.replay_sweep import (
    ReplaySweepOptions,
    ReplaySweepOutcome,
    require_search_only,
    run_replay_sweep,
)

__all__ = [
    "MultiFidelityOptions",
    "MultiFidelityOutcome",
    "ReplaySweepOptions",
    "ReplaySweepOutcome",
    "require_search_only",
    "run_multi_fidelity",
    "run_replay_sweep",
]
