"""The example user package, pip-installed, runs the whole study with esper-ab's CLI as a
user would (``validate``, ``record``, ``replay``, ``sweep --smoke-test``, ``analyze``),
each command a subprocess in a fresh folder; nothing in esper-ab names the workload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "examples" / "custom_workload" / "shapes_space.yaml"
CLI = [sys.executable, "-m", "esper_ab"]


def _run(args, cwd, timeout=540):
    done = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_record_replay_sweep_and_analyze_the_example_package(shapes_installed, tmp_path):
    assert "contract of shapes: ok" in _run(["validate", str(SPACE)], tmp_path)

    out = _run(["record", str(SPACE), "--out", "traces"], tmp_path)
    assert "4 episode(s) of 1 workload(s) x 4 replicate(s)" in out
    seeds = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "traces").glob(
        "shapes-r*-seeds.parquet")))
    assert sorted(seeds["replicate"].unique()) == [0, 1, 2, 3]
    # the catalog's declared fit: mixer grows at body only, the others at both slots
    pairs = set(zip(seeds["slot"], seeds["blueprint"], strict=True))
    assert pairs == {("stem", "gain"), ("stem", "smooth"), ("stem", "placebo"),
                     ("body", "gain"), ("body", "mixer"), ("body", "smooth"),
                     ("body", "placebo")}
    placebo = seeds[seeds["blueprint"] == "placebo"]
    assert (placebo["value_acc_pp"] == 0).all()          # the placebo is its own control

    uri = f"sqlite:///{tmp_path}/replay.db"
    out = _run(["replay", str(SPACE), "--traces", "traces", "--num-samples", "20",
                "--tracking-uri", uri], tmp_path)
    assert "Per blueprint" in out and "Verdict:" in out
    decisions = sorted(tmp_path.glob("mlruns/**/artifacts/sweep/decisions.csv"))
    assert len(decisions) == 1
    table = pd.read_csv(decisions[0])
    assert set(table["blueprint"]) == {"gain", "mixer", "smooth"}

    # beside it, the sweep's own analysis: its settings reproduce the sweep's verdict
    sibling = decisions[0].with_name("analysis.json")
    out = _run(["analyze", str(decisions[0]), "--settings-from", str(sibling),
                "--json", "analysis.json"], tmp_path)
    assert out.startswith("Verdict:") and (tmp_path / "analysis.json").is_file()
    mine = json.loads((tmp_path / "analysis.json").read_text())
    assert mine["verdict"] == json.loads(sibling.read_text())["verdict"]

    out = _run(["sweep", str(SPACE), "--smoke-test", "--tracking-uri",
                f"sqlite:///{tmp_path}/sweep.db"], tmp_path)
    assert "Verdict:" in out and "experiment 'shapes'" in out
