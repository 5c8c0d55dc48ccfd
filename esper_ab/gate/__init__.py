"""Stage 3, the G2 gate: per-epoch measurements -> a decision record.

A gate is a strategy, a threshold (or per-blueprint thresholds), a window over the steps of an
epoch (last measured step, mean, median), an optional EMA across epochs, a minimum number of
epochs in TRAINING and a clamp. The decision logic is written once, in numpy over arrays of
shape [seeds, epochs, steps] (``_core``): the online :class:`GateTracker` (``_tracker``) calls
it with one seed and the replay engine with thousands, so replay equals the online gate.

- ``_config``: :class:`GateConfig` (pydantic-validated when read) and the decision records;
- ``_presets``: esper-lite's own gates (:data:`PRESETS`);
- ``_file``: the one loader of gate files, winner files verified field by field;
- ``_load``: :func:`load_gate_config` / :func:`build_gate` from a preset, a file or a config.
"""

from esper_ab.gate._config import (
    CHECKS,
    WINDOWS,
    Check,
    DecisionArrays,
    GateConfig,
    GateDecision,
    StepMeasurement,
    Window,
)
from esper_ab.gate._core import Gate, StepReduction, StepStates, step_states
from esper_ab.gate._file import (
    FORMAT,
    ForcedExportWarning,
    MetricEvidence,
    WinnerEvidence,
    WinnerFile,
    calibration_hash,
    integrity_of,
    load_winner,
    read_gate_file,
    resign_winner,
    warn_if_forced,
    write_winner,
)
from esper_ab.gate._load import build_gate, load_gate_config
from esper_ab.gate._presets import PRESETS
from esper_ab.gate._tracker import GateTracker

__all__ = [
    "CHECKS",
    "FORMAT",
    "PRESETS",
    "WINDOWS",
    "Check",
    "DecisionArrays",
    "ForcedExportWarning",
    "Gate",
    "GateConfig",
    "GateDecision",
    "GateTracker",
    "MetricEvidence",
    "StepMeasurement",
    "StepReduction",
    "StepStates",
    "Window",
    "WinnerEvidence",
    "WinnerFile",
    "build_gate",
    "calibration_hash",
    "integrity_of",
    "load_gate_config",
    "load_winner",
    "read_gate_file",
    "step_states",
    "resign_winner",
    "warn_if_forced",
    "write_winner",
]
