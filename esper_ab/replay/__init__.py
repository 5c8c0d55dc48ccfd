"""Stage 5, replay: exact G2 decisions of any gate from recorded traces, without retraining.

- ``engine``: :class:`TraceSet`, :func:`replay_decisions` (the gate's own vectorized core over
  every recorded seed, so replay equals the online gate exactly), cross-fitting.
- ``evidence``: where a sweep's traces come from, recorded episodes or the synthetic
  generator (:class:`ReplayEvidence`, :func:`evidence_for_spec`, :func:`synthetic_traces`).
"""

from esper_ab.replay.engine import (
    CONTROL_BLUEPRINTS,
    SEED_KEYS,
    TRACE_KEYS,
    CrossFitSplit,
    ReplayArrays,
    ReplayResult,
    TraceSet,
    calibration_data,
    decide_rows,
    decisions_table,
    fold_split,
    replay_decisions,
)
from esper_ab.replay.evidence import (
    PLANTED_BLUEPRINTS,
    PLANTED_SLOTS,
    ReplayEvidence,
    SyntheticBlueprint,
    evidence_for_spec,
    synthetic_traces,
)

__all__ = [
    "PLANTED_BLUEPRINTS",
    "PLANTED_SLOTS",
    "CONTROL_BLUEPRINTS",
    "SEED_KEYS",
    "TRACE_KEYS",
    "CrossFitSplit",
    "ReplayArrays",
    "ReplayEvidence",
    "ReplayResult",
    "SyntheticBlueprint",
    "TraceSet",
    "calibration_data",
    "decide_rows",
    "decisions_table",
    "evidence_for_spec",
    "fold_split",
    "replay_decisions",
    "synthetic_traces",
]
