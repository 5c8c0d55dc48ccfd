"""``esper-ab export --resign FILE`` (the documented way to keep a winner file edited on
purpose) and export's checks before it reads anything (no store created at a mistyped
path)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from esper_ab.errors import ConfigError
from esper_ab.export import load_gate
from esper_ab.gate import (
    GateConfig,
    MetricEvidence,
    WinnerEvidence,
    WinnerFile,
    load_gate_config,
    write_winner,
)

PER_BLUEPRINT = GateConfig(strategy="raw", threshold=0.1, min_epochs=3,
                           thresholds={"norm": 0.12, "attention": 0.02})


def _winner(tmp_path):
    ev = WinnerEvidence(experiment="e", sweep_run_id="p", trial_run_id="t", trial="t001",
                        fidelity="replay", baseline="esper_lite_baseline", replicates=[0, 1],
                        objective="balanced_accuracy",
                        metrics={"balanced_accuracy": MetricEvidence(estimate=0.7)},
                        pvalue_vs_baseline=0.01, pvalue_adjusted_vs_baseline=0.02,
                        adjustment="holm", verdict="t001 beats the baseline")
    doc = WinnerFile(exported_at="2026-12-01T00:00:00+0000", gate=PER_BLUEPRINT.to_dict(),
                     per_blueprint_thresholds={"norm": 0.12, "attention": 0.02},
                     selection={"objective": "balanced_accuracy"}, evidence=ev,
                     versions={}, git_commit="x")
    return write_winner(doc, tmp_path / "winner.yaml")


def _edit(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "esper_ab", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, \
        proc.stderr
    return lines[0]


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["gate"]["thresholds"].update(norm=0.5), "gate.thresholds"),
    (lambda d: d["per_blueprint_thresholds"].update(attention=0.9), "per_blueprint_thresholds"),
    (lambda d: d["selection"].update(objective="mcc"), "selection"),
    (lambda d: d["integrity"].pop("gate.thresholds"), "gate.thresholds"),
])
def test_per_blueprint_thresholds_are_covered_by_the_integrity_table(tmp_path, edit, field):
    path = _winner(tmp_path)
    _edit(path, edit)
    for load in (load_gate_config, load_gate):
        with pytest.raises(ConfigError, match=rf"field {field} does not match"):
            load(str(path))


def test_export_resign_re_signs_an_edit_made_on_purpose(tmp_path):
    path = _winner(tmp_path)
    _edit(path, lambda d: d["gate"]["thresholds"].update(norm=0.5))
    assert "gate.thresholds" in _one_line(_cli("episode", "--workload", "digits", "--size",
                                               "tiny", "--replicate", "0", "--gate", str(path)))
    proc = _cli("export", "--resign", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "re-signed" in proc.stdout
    assert load_gate(path).config.thresholds["norm"] == 0.5
    assert "re-signed" in yaml.safe_load(path.read_text())["exported_at"]


def test_export_resign_refuses_what_is_not_a_valid_winner(tmp_path):
    path = _winner(tmp_path)
    _edit(path, lambda d: d["gate"].update(min_epochs=-3))
    assert "min_epochs" in _one_line(_cli("export", "--resign", str(path)))
    assert "not a file" in _one_line(_cli("export", "--resign", str(tmp_path / "nope.yaml")))


def test_export_creates_nothing_at_a_mistyped_store(tmp_path):
    missing = tmp_path / "typo" / "mlflow.db"
    line = _one_line(_cli("export", "--experiment", "x", "--tracking-uri",
                          f"sqlite:///{missing}", cwd=tmp_path))
    assert "does not exist" in line
    assert not (tmp_path / "typo").exists()
    line = _one_line(_cli("report", "--experiment", "x", "--out", str(tmp_path / "r"),
                          "--tracking-uri", f"sqlite:///{tmp_path}/none.db", cwd=tmp_path))
    assert "does not exist" in line and not (tmp_path / "none.db").exists()
    assert "--experiment" in _one_line(_cli("export", cwd=tmp_path))
