"""A gate from what a user names: a preset, a gate file, or a config."""

from __future__ import annotations

from pathlib import Path

from esper_ab.errors import bad_value
from esper_ab.gate._config import GateConfig
from esper_ab.gate._core import Gate
from esper_ab.gate._file import read_gate_file
from esper_ab.gate._presets import PRESETS


def load_gate_config(spec: str) -> GateConfig:
    """A preset name, or the path of a gate file (a plain gate config or a winner file,
    verified by :func:`esper_ab.gate.read_gate_file`)."""
    if spec in PRESETS:
        return PRESETS[spec]
    if not Path(spec).is_file():
        raise bad_value("gate", spec, f"use a preset {sorted(PRESETS)} or an existing YAML file")
    return read_gate_file(spec)


def build_gate(spec: str | GateConfig) -> Gate:
    """A Gate from a preset name, a gate file path or a GateConfig."""
    return Gate(spec if isinstance(spec, GateConfig) else load_gate_config(spec))
