"""Console tables for people (``esper_ab.console``): aligned, rounded, counts as integers,
every header, name and word whole (no '...' or mid-word cut), plain text off a terminal;
and the printed analysis (``esper-ab analyze``) built from them, its counts checked against
the decisions by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from esper_ab.console import fmt, render_frame, render_table
from esper_ab.stats import SimulationDesign, StrategySpec, analyze, simulate_decisions

LONG = "param.legacy_edge_cases_of_the_esper_lite_gate"


def _data_lines(text: str) -> list[str]:
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    return lines[rule + 1:]


def test_cells_counts_are_integers_and_rates_are_rounded():
    assert fmt(np.int64(2)) == "2" and fmt(np.float64(0.123456)) == "0.123"
    assert fmt(float("nan")) == "-" and fmt(None) == "-" and fmt(True) == "yes"
    frame = pd.DataFrame({"replicates": [2.0, 12.0], "pass_rate": [0.5, 0.987654]},
                         index=pd.Index(["t001-baseline", "t002-exponent"], name="trial"))
    text = render_frame(frame, counts=("replicates",))
    assert "2.0" not in text and "12.0" not in text          # not 'replicates 2.0000'
    rows = [line.split() for line in _data_lines(text)]
    assert rows == [["t001-baseline", "2", "0.500"], ["t002-exponent", "12", "0.988"]]


def test_missing_values_of_every_kind_print_as_a_dash():
    """pandas' nullable integers (pd.NA), NaN and None: '-' (the agreement table of a
    multi-fidelity sweep has nullable rank columns)."""
    frame = pd.DataFrame({"config": ["reference", "t001-a"],
                          "closed_rank": pd.array([pd.NA, 2], dtype="Int64"),
                          "replay": [float("nan"), 0.25]})
    rows = [line.split() for line in _data_lines(render_frame(frame, counts=("closed_rank",)))]
    assert rows == [["reference", "-", "-"], ["t001-a", "2", "0.250"]]
    assert fmt(pd.NA) == "-" and fmt(pd.NaT) == "-"


@pytest.mark.parametrize("width", [40, 60, 100])
def test_nothing_is_cut_at_any_width(width):
    """Long names and headers at a narrow width: no ellipsis, every word whole (the table
    wraps between words or grows wider, never crops)."""
    rows = [[LONG, 0.25, 3, "a wrapped description of the parameters of this config"],
            ["t002-first_order_value", 0.5, 12, "short"]]
    cols = ["trial (the candidate)", "balanced accuracy", "replicates", "parameters"]
    text = render_table(cols, rows, numeric=["balanced accuracy", "replicates"],
                        keep=["trial (the candidate)"], width=width)
    assert "..." not in text and "…" not in text and "\x1b" not in text
    words = set(text.split())
    for word in [LONG, "t002-first_order_value", "0.250", "0.500", "12", "description",
                 "parameters", "accuracy", "replicates", "candidate)"]:
        assert word in words, (word, text)


def test_number_columns_are_right_aligned_and_names_left_aligned():
    rows = [["a", 1.5, 1], ["bbbbbbbbbbbb", 22.25, 1234], ["cc", -0.125, 7]]
    text = render_table(["name", "value", "n"], rows, numeric=["value", "n"])
    lines = _data_lines(text)
    header = text.splitlines()[0]
    ends = {header.index("value") + len("value")}
    ends |= {line.index(cell) + len(cell) for line, cell in
             zip(lines, ["1.500", "22.250", "-0.125"], strict=True)}
    assert len(ends) == 1                                   # one right edge per column
    assert {len(line.rstrip()) for line in [header, *lines]} == {len(lines[1].rstrip())}
    assert all(line.startswith(name) for line, name in
               zip(lines, ["a ", "bbbbbbbbbbbb", "cc "], strict=True))


def test_off_a_terminal_the_width_is_100_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    rows = [[f"row{i}", "word " * 30, i] for i in range(3)]
    text = render_table(["name", "text", "n"], rows, numeric=["n"])
    assert max(len(line) for line in text.splitlines()) <= 100
    assert len(text.splitlines()) > 4                       # the text wrapped, not cut
    assert text.count("word") == 90


# -- the analysis as printed --------------------------------------------------------------
@pytest.fixture(scope="module")
def decisions() -> pd.DataFrame:
    design = SimulationDesign(blueprints=("attention", "conv_light", "norm"), strategies=(
        StrategySpec("baseline", (0.1, 0.5, 0.9), signal=0.2),
        StrategySpec("t001-baseline", (0.5,) * 3, signal=0.8)),
        n_replicates=6, seeds_per_cell=4)
    return simulate_decisions(design, seed=3)


def test_the_printed_analysis_is_tables_for_people(decisions):
    text = analyze(decisions, n_boot=50, n_perm=100, seed=0).format_table()
    assert "..." not in text and "\x1b" not in text
    assert not re.search(r"\b\d+\.0000\b", text)            # no 'replicates 2.0000'
    per = text.split("Per blueprint\n", 1)[1].split("\n\nOverall", 1)[0]
    header, *_ = per.splitlines()
    assert header.split()[:4] == ["strategy", "blueprint", "n", "unmeasured"]
    rows = [line.split() for line in _data_lines(per)]
    counts = decisions.groupby(["strategy", "blueprint"]).size()
    assert len(rows) == len(counts)
    for r in rows:                                           # n by hand, as an integer
        assert r[2] == str(counts.loc[(r[0], r[1])]), r
    overall = text.split("\nOverall\n", 1)[1].split("\n\n", 1)[0]
    by_hand = decisions.groupby("strategy")["passed"].mean()
    for r in (line.split() for line in _data_lines(overall)):
        assert r[1] == str(int((decisions["strategy"] == r[0]).sum()))
        assert float(r[2]) == pytest.approx(by_hand[r[0]], abs=5e-4)


def test_analyze_redirected_to_a_file_is_plain_text(tmp_path, decisions):
    path = tmp_path / "decisions.csv"
    decisions.to_csv(path, index=False)
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "esper_ab", "analyze", str(path),
                               "--n-boot", "50", "--n-perm", "100"],
                              stdout=f, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "\x1b" not in text and "..." not in text and "Overall" in text
    overall = text.split("\nOverall\n", 1)[1].split("\n\n", 1)[0]
    assert max(len(line) for line in overall.splitlines()) <= 100


def test_the_observational_report_is_a_table_for_people():
    """``analyze --observational``: a long blueprint name stays whole, counts are integers
    equal to the table's by hand, the columns line up (it was hand-padded f-strings)."""
    from esper_ab.stats import analyze_observational

    long_bp = "a_blueprint_name_longer_than_twelve"
    t = pd.DataFrame({
        "replicate": ["r1", "r1", "r2", "r2", "r3", "r3"],
        "blueprint": [long_bp, "b", long_bp, "b", long_bp, "b"],
        "strategy": "s", "passed": [1, 0, 1, 1, 0, 0],
        "pass_epoch": [12, np.nan, 16, 12, np.nan, np.nan],
        "statistic": [0.5, 0.02, 1.5, 0.3, 0.01, 0.04], "g2_attempts": [4, 10, 5, 4, 10, 10]})
    text = analyze_observational(t, n_boot=50, n_perm=50).format_table()
    block = text.split("\n", 1)[1].split("\nblueprint x pass", 1)[0]
    lines = block.splitlines()          # headers wrap between words, bottom-aligned
    header = lines[next(i for i, x in enumerate(lines) if set(x.strip()) == {"─"}) - 1]
    assert header.split()[:4] == ["blueprint", "n", "runs", "passes"]
    rows = {line.split()[0]: line for line in _data_lines(block)}
    assert set(rows) == {long_bp, "b"} and "..." not in text
    for bp, line in rows.items():
        d = t[t["blueprint"] == bp]
        assert line.split()[1:4] == [str(len(d)), str(d["replicate"].nunique()),
                                     str(int(d["passed"].sum()))]
    ends = {line.index(cells[3]) + len(cells[3]) for line, cells in
            ((ln, ln.split()) for ln in rows.values())}
    assert ends == {header.index("passes") + len("passes")}   # right-aligned under its head
