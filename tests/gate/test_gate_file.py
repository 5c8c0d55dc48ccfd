"""The one gate-file loader: plain gate files validated by pydantic, winner files verified
field by field, and ``--gate`` going through both (issue: a tampered winner.yaml loaded
through ``--gate`` without complaint)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import yaml

from esper_ab.errors import ConfigError
from esper_ab.export import load_gate
from esper_ab.gate import (
    ForcedExportWarning,
    GateConfig,
    MetricEvidence,
    WinnerEvidence,
    WinnerFile,
    build_gate,
    load_gate_config,
    resign_winner,
    write_winner,
)

CALIBRATED = GateConfig(strategy="per_blueprint_threshold", strategy_params={"quantile": 0.5},
                        threshold=1.0, min_epochs=3,
                        calibration={"thresholds": {"norm": 0.12, "attention": 0.02},
                                     "pooled": 0.1})


def _winner(gate: GateConfig = CALIBRATED, *, forced: bool = False) -> WinnerFile:
    ev = WinnerEvidence(experiment="e", sweep_run_id="p", trial_run_id="t", trial="t001",
                        fidelity="replay", baseline="esper_lite_baseline", replicates=[0, 1],
                        objective="balanced_accuracy",
                        metrics={"balanced_accuracy": MetricEvidence(estimate=0.7)},
                        pvalue_vs_baseline=0.01, pvalue_adjusted_vs_baseline=0.02,
                        adjustment="holm", verdict="t001 beats the baseline",
                        verdict_kind="winner", forced=forced)
    return WinnerFile(exported_at="2026-12-01T00:00:00+0000", gate=gate.to_dict(),
                      selection={"objective": "balanced_accuracy"}, evidence=ev,
                      versions={}, git_commit="x")


@pytest.fixture
def winner_path(tmp_path):
    return write_winner(_winner(), tmp_path / "winner.yaml")


def _edit(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def test_a_written_winner_loads_through_every_entry_point(winner_path):
    assert load_gate_config(str(winner_path)) == CALIBRATED
    assert build_gate(str(winner_path)).config == CALIBRATED
    assert load_gate(winner_path).config == CALIBRATED


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["gate"].update(threshold=0.5), "gate.threshold"),
    (lambda d: d["gate"]["strategy_params"].update(quantile=0.9), "gate.strategy_params"),
    (lambda d: d["gate"].update(strategy="raw"), "gate.strategy"),
    (lambda d: d["gate"].update(min_epochs=1), "gate.min_epochs"),
    (lambda d: d["gate"].update(window="mean"), "gate.window"),
    (lambda d: d["evidence"].update(pvalue_vs_baseline=0.0001), "evidence"),
    (lambda d: d["integrity"].pop("gate.clamp"), "gate.clamp"),
])
def test_an_edited_field_is_refused_by_name(winner_path, edit, field):
    _edit(winner_path, edit)
    for load in (load_gate_config, load_gate):
        with pytest.raises(ConfigError, match=rf"field {field} does not match"):
            load(str(winner_path))


def test_an_edited_calibration_or_a_removed_hash_is_refused(winner_path):
    _edit(winner_path, lambda d: d["gate"]["calibration"]["thresholds"].update(norm=9.0))
    with pytest.raises(ConfigError, match="calibration_sha256"):
        load_gate_config(str(winner_path))
    _edit(winner_path, lambda d: (d.pop("integrity"), d.update(calibration_sha256=None),
                                  d["gate"].update(calibration=None)))
    with pytest.raises(ConfigError, match="no integrity table"):
        load_gate(winner_path)


def test_a_stripped_winner_is_not_read_as_a_plain_gate_file(winner_path):
    _edit(winner_path, lambda d: d.pop("format"))
    with pytest.raises(ConfigError, match="format"):
        load_gate_config(str(winner_path))


def test_resign_accepts_an_edit_made_on_purpose(winner_path):
    _edit(winner_path, lambda d: d["gate"].update(threshold=0.5))
    with pytest.raises(ConfigError):
        load_gate(winner_path)
    doc = resign_winner(winner_path)
    assert "re-signed" in doc.exported_at
    assert load_gate(winner_path).config.threshold == 0.5


def test_resign_still_refuses_an_invalid_gate(winner_path):
    _edit(winner_path, lambda d: d["gate"].update(clamp=-1))
    with pytest.raises(ConfigError, match="clamp"):
        resign_winner(winner_path)


def test_a_forced_export_warns_naming_the_flag_and_the_verdict(tmp_path):
    path = write_winner(_winner(forced=True), tmp_path / "forced.yaml")
    with pytest.warns(ForcedExportWarning, match="--force.*winner"):
        load_gate(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_gate(write_winner(_winner(), tmp_path / "plain.yaml"))


@pytest.mark.parametrize(("text", "match"), [
    ("strategy: exponent\nclamp: -1\n", "clamp"),
    ("strategy: exponent\nmin_epochs: true\n", "min_epochs"),
    ("strategy: exponent\nthreshold: 'high'\n", "threshold"),
    ("strategy: exponent\nwindow: max\n", "window"),
    ("strategy: exponent\nema_decay: 1.5\n", "ema_decay"),
    ("stratgy: raw\n", "stratgy"),
    ("- a\n- b\n", "not a mapping"),
    ("a: &x [1]\nb: [*x, *x]\n" + "".join(f"c{i}: *x\n" for i in range(120)), "alias"),
    ("k: " + "[" * 200 + "]" * 200 + "\n", "nesting"),
    ("strategy: [\n", "line 2"),
])
def test_a_plain_gate_file_is_validated(tmp_path, text, match):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_gate_config(str(path))


def test_a_plain_gate_file_with_a_gate_section_loads(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("gate:\n  strategy: exponent\n  strategy_params: {a: 0.25}\n  clamp: 10\n")
    assert load_gate_config(str(path)).clamp == 10


def test_a_non_utf8_gate_file_is_one_line(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_bytes(b"strategy: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_gate_config(str(path))


def test_cli_gate_refuses_a_tampered_winner_with_one_line(winner_path):
    _edit(winner_path, lambda d: d["gate"].update(threshold=0.01))
    proc = subprocess.run([sys.executable, "-m", "esper_ab", "episode", "--workload", "digits",
                           "--size", "tiny", "--replicate", "0", "--gate", str(winner_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gate.threshold" in lines[0] and "Traceback" not in proc.stderr
