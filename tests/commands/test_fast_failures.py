"""A bad option or path fails before any heavy library is imported: one line on stderr,
exit 2, the value named, and none of Ray, MLflow, torch, Optuna, pandas, SciPy loaded."""

from __future__ import annotations

import json
import subprocess
import sys

from esper_ab.commands.episode import WORKLOADS

HEAVY = ("ray", "mlflow", "torch", "optuna", "pandas", "scipy", "statsmodels", "matplotlib")

CASES = [   # (argv, the bad value the message must name)
    (["sweep", "nosuch_space.yaml"], "nosuch_space.yaml"),
    (["sweep", "search_spaces"], "search_spaces"),                # a folder, not a file
    (["record", "nosuch_space.yaml"], "nosuch_space.yaml"),
    (["replay", "nosuch_space.yaml", "--traces", "nosuch_traces"], "nosuch_space.yaml"),
    (["replay", "search_spaces/smoke.yaml", "--traces", "nosuch_traces"], "nosuch_traces"),
    (["validate", "nosuch_space.yaml"], "nosuch_space.yaml"),
    (["analyze", "nosuch_decisions.csv"], "nosuch_decisions.csv"),
    (["analyze", "nosuch_decisions.csv", "--observational"], "nosuch_decisions.csv"),
    (["ingest", "esper-lite", "nosuch_events", "--out", "x.csv"], "nosuch_events"),
    (["episode", "--workload", "nosuch_workload", "--replicate", "0"], "nosuch_workload"),
    (["episode", "--workload", "digits", "--replicate", "0", "--gate", "nosuch_gate.yaml"],
     "nosuch_gate.yaml"),
    (["demo", "--space", "nosuch_space.yaml"], "nosuch_space.yaml"),
    (["demo", "--dir", "pyproject.toml"], "pyproject.toml"),
    (["demo", "--bogus-option"], "--bogus-option"),
    (["sweep", "search_spaces/smoke.yaml", "--schedule-timeout", "-1"], "-1"),
]

PROBE = """
import contextlib, io, json, sys
from esper_ab.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out.append({"argv": argv, "rc": rc, "err": err.getvalue(),
                "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]})
print(json.dumps(out))
"""


def test_bad_options_and_paths_fail_before_the_heavy_imports():
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps([argv for argv, _ in CASES]),
                          json.dumps(HEAVY)], capture_output=True,
                         text=True, check=True)
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(results) == len(CASES)
    for r, (argv, bad) in zip(results, CASES, strict=True):
        assert r["rc"] == 2, argv
        lines = r["err"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("esper-ab: error: "), (argv, lines)
        assert bad in lines[0], (argv, lines)
        assert r["heavy"] == [], (argv, r["heavy"])
        assert "issue" not in lines[0].lower(), lines

def test_the_episode_command_knows_every_builtin_workload():
    from esper_ab.episodes.workloads import list_workloads

    assert WORKLOADS == tuple(list_workloads())[:len(WORKLOADS)]


def test_an_observational_table_without_the_flag_names_the_flag(tmp_path):
    table = tmp_path / "obs.csv"
    table.write_text("replicate,blueprint,strategy,passed,pass_epoch,statistic\n"
                     "0,norm,esper_lite,True,10,0.2\n")
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps([["analyze", str(table)]]),
                          json.dumps(HEAVY)], capture_output=True, text=True, check=True)
    (r,) = json.loads(res.stdout.strip().splitlines()[-1])
    line = r["err"].strip()
    assert r["rc"] == 2 and line.count("\n") == 0 and r["heavy"] == []
    assert "--observational" in line and "issue" not in line.lower() and "obs.csv" in line


def test_no_error_message_in_the_package_cites_an_issue_number():
    """Messages name the flag or the doc to read, never a tracker's issue number."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "esper_ab"
    cited = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"""["'].*\bissue \d+""", code) and not code.lstrip().startswith(('"""', "'''")):
                cited.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not cited, cited
