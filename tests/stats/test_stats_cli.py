"""`esper-ab analyze` end to end in a subprocess: JSON output, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from esper_ab.stats import SimulationDesign, StrategySpec, simulate_decisions


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper_ab", "analyze", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    design = SimulationDesign(
        blueprints=("attention", "norm", "conv_light"), n_replicates=10, seeds_per_cell=2,
        unmeasured_rate=0.1,
        strategies=(StrategySpec("sqrt", (0.1, 0.5, 0.9), signal=0.2),
                    StrategySpec("mean_abs", (0.5, 0.5, 0.5), signal=0.5)))
    path = tmp_path_factory.mktemp("cli") / "decisions.csv"
    simulate_decisions(design, seed=0).drop(columns=["seed"]).to_csv(path, index=False)
    return path


def test_analyze_prints_the_report_and_writes_json(csv_path, tmp_path):
    out = tmp_path / "out.json"
    proc = _run(str(csv_path), "--baseline", "sqrt", "--alpha", "0.1", "--json", str(out),
                "--n-boot", "200", "--n-perm", "200")
    assert proc.returncode == 0, proc.stderr
    assert "Per blueprint" in proc.stdout and "Verdict" in proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith("Verdict: ")  # the answer is the first line
    data = json.loads(out.read_text())
    assert data["baseline"] == "sqrt" and data["alpha"] == 0.1
    assert set(data["per_blueprint"]) == {"sqrt", "mean_abs"}
    assert set(data["per_blueprint"]["sqrt"]) == {"attention", "norm", "conv_light"}
    assert "equalized_odds_gap" in data["disparities"]["mean_abs"]
    assert all("pvalue_adjusted" in t for t in data["tests"])
    assert "winner" in data["verdict"] and data["verdict"]["reason"]
    assert data["verdict"]["kind"] in ("winner", "not_better", "undecided")
    assert data["verdict"]["headline"] == first
    assert (data["verdict"]["winner"] is None) == (data["verdict"]["kind"] != "winner")


def test_rule_options_reach_the_verdict_and_bad_ones_exit_2(csv_path, tmp_path):
    out = tmp_path / "rule.json"
    proc = _run(str(csv_path), "--baseline", "sqrt", "--n-boot", "50", "--n-perm", "100",
                "--margin", "0.1", "--min-valuable", "3", "--gap-bound", "ci_high",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rule = json.loads(out.read_text())["verdict"]["rule"]
    assert (rule["margin"], rule["min_valuable"], rule["gap_bound"]) == (0.1, 3, "ci_high")
    bad = _run(str(csv_path), "--baseline", "sqrt", "--margin", "-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "margin" in bad.stderr and "-1" in bad.stderr


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda text: text.replace("valuable", "worth", 1), "valuable"),
        (lambda text: text.replace("True", "perhaps", 1), "must be boolean"),
        (lambda text: "", "not a readable CSV"),
    ],
    ids=["missing-column", "bad-bool", "empty-file"],
)
def test_bad_csv_exits_2_with_one_stderr_line(csv_path, tmp_path, edit, needle):
    bad = tmp_path / "bad.csv"
    bad.write_text(edit(csv_path.read_text()))
    proc = _run(str(bad), "--baseline", "sqrt")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("esper-ab: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_unknown_baseline_exits_2(csv_path):
    proc = _run(str(csv_path))  # default baseline name "baseline" is not in this table
    assert proc.returncode == 2
    assert "--baseline" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("names", [("reference", "t002-baseline"), ("baseline", "t002-x")])
def test_the_default_baseline_is_a_sweeps_reference_else_baseline(csv_path, tmp_path, names):
    # A sweep's decisions label the reference gate 'reference', and a candidate of the
    # 'baseline' strategy 't002-baseline'; a user's own table may say 'baseline'.
    import pandas as pd
    table = pd.read_csv(csv_path)
    table["strategy"] = table["strategy"].map({"sqrt": names[0], "mean_abs": names[1]})
    path = tmp_path / "renamed.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out.json"
    proc = _run(str(path), "--json", str(out), "--n-boot", "100", "--n-perm", "100")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["baseline"] == names[0]
    # a sweep's table judged by the defaults may disagree with the sweep: say how to match it
    assert ("--settings-from analysis.json" in proc.stderr) == (names[0] == "reference")


def test_settings_from_reuses_an_earlier_analysis_and_flags_still_win(csv_path, tmp_path):
    """What a sweep writes beside its decisions.csv: the analysis JSON of its own rule and
    resampling (written here by the library, not by the CLI under test)."""
    import pandas as pd

    from esper_ab.stats import SelectionRule, analyze

    rule = SelectionRule(margin=0.1, min_valuable=2, min_non_valuable=3, max_gap=0.3)
    earlier = analyze(pd.read_csv(csv_path), baseline="sqrt", alpha=0.1, rule=rule,
                      n_boot=150, n_perm=120, seed=5).to_dict()
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps(earlier))
    out = tmp_path / "again.json"
    proc = _run(str(csv_path), "--settings-from", str(path), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out.read_text())
    assert (again["baseline"], again["alpha"]) == ("sqrt", 0.1)
    assert again["settings"] == earlier["settings"]      # rule, n_boot, n_perm and seed
    assert again["verdict"] == earlier["verdict"]
    assert again["tests"] == earlier["tests"]
    assert proc.stdout.splitlines()[0] == earlier["verdict"]["headline"]

    proc = _run(str(csv_path), "--settings-from", str(path), "--min-valuable", "7",
                "--n-perm", "100", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(out.read_text())["settings"]
    assert (settings["rule"]["min_valuable"], settings["rule"]["margin"]) == (7, 0.1)
    assert (settings["n_perm"], settings["n_boot"], settings["seed"]) == (100, 150, 5)


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "not an analysis's JSON"),
    ('{"verdict": {}}', "no 'settings'"),
    ('{"settings": {"n_boot": 10, "n_perm": 10, "seed": 0, "rule": {"colour": 1}}, '
     '"alpha": 0.05, "ci_level": 0.95, "baseline": "sqrt"}', "colour"),
])
def test_settings_from_refuses_what_is_not_an_analysis(csv_path, tmp_path, content, needle):
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content)
    proc = _run(str(csv_path), "--settings-from", str(path), "--json", str(tmp_path / "o.json"))
    assert proc.returncode == 2 and not (tmp_path / "o.json").exists()
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--settings-from" in proc.stderr and needle in proc.stderr
