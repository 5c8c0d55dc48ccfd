"""Gate files: one loader for every file that defines a gate.

Two kinds of file define a gate:

- a **winner file** (``format: esper-ab/winner@2``, written by ``esper-ab export``): the gate
  with its calibration, the evidence that chose it and an ``integrity`` table, a sha256 per
  field of the gate definition (strategy, parameters, threshold(s), calibration, window,
  EMA, min epochs, clamp, dead-seed handling), of the per-blueprint thresholds, the selection
  rule and the evidence. An edited file is refused with one line naming the field that no
  longer matches; ``esper-ab export --resign FILE`` re-signs a file edited on purpose;
- a **plain gate file**: the ``GateConfig`` keys at the top level, validated by pydantic.

``--gate``, ``esper_ab.load_gate``, closed-loop runs and the esper-lite plug-in all read gate
files through :func:`read_gate_file`.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from esper_ab.errors import ConfigError, shown
from esper_ab.gate._config import GateConfig
from esper_ab.inputs import read_yaml_mapping

FORMAT = "esper-ab/winner@2"
RESIGN_HINT = "re-export it, or re-sign an edit you made on purpose with 'esper-ab export --resign FILE'"


class ForcedExportWarning(UserWarning):
    """A gate exported with ``--force`` although the verdict named no winner."""


def _sha(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(text.encode()).hexdigest()


def calibration_hash(calibration: Mapping[str, Any] | None) -> str | None:
    """sha256 of the calibration state as canonical JSON (None when there is none)."""
    return None if calibration is None else _sha(calibration)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricEvidence(_Model):
    estimate: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class WinnerEvidence(_Model):
    experiment: str
    sweep_run_id: str
    trial_run_id: str
    trial: str
    fidelity: str
    baseline: str
    replicates: list[int]
    objective: str
    metrics: dict[str, MetricEvidence]
    pvalue_vs_baseline: float | None
    pvalue_adjusted_vs_baseline: float | None
    adjustment: str | None
    verdict: str
    verdict_kind: str | None = None
    forced: bool = False


class WinnerFile(_Model):
    format: Literal["esper-ab/winner@2"] = FORMAT
    exported_at: str
    gate: dict[str, Any]
    calibration_sha256: str | None = None
    per_blueprint_thresholds: dict[str, float] = Field(default_factory=dict)
    selection: dict[str, Any]
    evidence: WinnerEvidence
    versions: dict[str, str]
    git_commit: str
    integrity: dict[str, str] = Field(default_factory=dict)

    def gate_config(self) -> GateConfig:
        return GateConfig.from_dict(self.gate)

    def signed(self) -> WinnerFile:
        """This document with its calibration hash and integrity table computed afresh."""
        return self.model_copy(update={"calibration_sha256": calibration_hash(
            self.gate.get("calibration")), "integrity": integrity_of(self)})


def integrity_of(doc: WinnerFile) -> dict[str, str]:
    """sha256 per field: every gate key, the per-blueprint thresholds, selection, evidence."""
    data = doc.model_dump(mode="json")
    table = {f"gate.{k}": _sha(v) for k, v in sorted(data["gate"].items())}
    for key in ("per_blueprint_thresholds", "selection", "evidence"):
        table[key] = _sha(data[key])
    return table


def _check_integrity(doc: WinnerFile, label: str) -> None:
    if calibration_hash(doc.gate.get("calibration")) != doc.calibration_sha256:
        raise ConfigError(f"{label}: the calibration does not match its calibration_sha256 "
                          f"(edited or truncated): {RESIGN_HINT}")
    if not doc.integrity:
        raise ConfigError(f"{label} has no integrity table: {RESIGN_HINT}")
    expected = integrity_of(doc)
    for field_name in sorted(set(expected) | set(doc.integrity)):
        if expected.get(field_name) != doc.integrity.get(field_name):
            raise ConfigError(f"{label}: field {field_name} does not match its integrity hash "
                              f"(edited, added or removed): {RESIGN_HINT}")


def _validated_winner(data: dict[str, Any], label: str) -> WinnerFile:
    try:
        return WinnerFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{label}: {loc or 'document'} is invalid ({err['msg']}): "
                          "re-export it with 'esper-ab export'") from None


_WINNER_KEYS = frozenset(WinnerFile.model_fields) - {"gate"}


def is_winner_document(data: Mapping[str, Any]) -> bool:
    """A mapping in the winner format, or what is left of one (any winner-only key); a
    mapping with nothing but a ``gate:`` section is a plain gate file."""
    return bool(_WINNER_KEYS & set(data))


def load_winner(path: str | Path, *, verify: bool = True) -> WinnerFile:
    """Read and validate a winner file: schema, then every integrity hash."""
    label = f"winner file {shown(str(path))}"
    data = read_yaml_mapping(path, "winner file", "export one with "
                             "'esper-ab export --experiment NAME --out winner.yaml'")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ConfigError(f"{label} has format={shown(fmt)}, not {FORMAT!r}: {RESIGN_HINT}")
    doc = _validated_winner(data, label)
    if verify:
        _check_integrity(doc, label)
    return doc


def warn_if_forced(doc: WinnerFile, path: str | Path) -> None:
    if doc.evidence.forced:
        warnings.warn(f"gate file {shown(str(path))} was exported with --force: the verdict "
                      f"it overrode was {doc.evidence.verdict_kind or 'no winner'} "
                      f"({doc.evidence.verdict[:160]!r})", ForcedExportWarning, stacklevel=3)


def read_gate_file(path: str | Path) -> GateConfig:
    """The gate a file defines: a verified winner file or a validated plain gate file."""
    label = f"gate file {shown(str(path))}"
    data = read_yaml_mapping(path, "gate file", "give a preset name, a gate YAML file or an "
                             "exported winner.yaml")
    if is_winner_document(data):
        doc = load_winner(path)
        warn_if_forced(doc, path)
        config = doc.gate_config()
    else:
        body = data["gate"] if set(data) == {"gate"} else data
        config = GateConfig.from_dict(body, what=label)
    return config


def write_winner(doc: WinnerFile, path: str | Path) -> Path:
    """Write a signed winner file (its hashes computed here), atomically."""
    p = Path(path)
    if not p.parent.is_dir():
        raise ConfigError(f"--out={shown(str(path))}: folder {shown(str(p.parent))} does not "
                          "exist: create it or choose another path")
    header = ("# esper-ab winner: load with esper_ab.load_gate(path) (verified), or pass the\n"
              "# file wherever a gate is accepted (--gate winner.yaml). Edits are refused\n"
              "# unless re-signed: esper-ab export --resign FILE.\n")
    text = header + yaml.safe_dump(doc.signed().model_dump(mode="json"), sort_keys=False)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    except OSError as exc:
        raise ConfigError(f"--out={shown(str(path))} cannot be written ({exc.strerror}): "
                          "choose a writable path") from None
    return p


def resign_winner(path: str | Path) -> WinnerFile:
    """Re-sign a winner file edited on purpose: validate its schema and gate, then recompute
    every hash. The re-signed file records when it was re-signed."""
    doc = load_winner(path, verify=False)
    GateConfig.from_dict(doc.gate, what=f"winner file {shown(str(path))}: gate")
    stamped = doc.model_copy(update={"exported_at": doc.exported_at.split(" (re-signed")[0]
                                     + f" (re-signed {time.strftime('%Y-%m-%dT%H:%M:%S%z')})"})
    write_winner(stamped, path)
    return stamped.signed()
