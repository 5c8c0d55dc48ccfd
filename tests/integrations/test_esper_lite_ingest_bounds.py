"""``esper-ab ingest esper-lite`` against hostile input (issue 19, item 5), formula cells in
its CSV (item 6), and runs decided by the esper-ab plug-in (issue 23, item 5).

Each hostile case must be one line on stderr, exit 2, nothing written. The FIFO and the
device are run in a child process with a timeout, so a regression hangs no test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
from test_esper_lite_ingest import G2_STRICT, GERM, _ev, _write

from esper_ab.cli import main
from esper_ab.errors import DataError
from esper_ab.integrations.esper_lite import STRICT, ingest_esper_lite, write_table
from esper_ab.integrations.esper_lite._events import MAX_DEPTH, MAX_LINE, MAX_NAME


def _cli_one_line(tmp_path: Path, target: Path, capsys) -> str:
    out = tmp_path / "o.csv"
    assert main(["ingest", "esper-lite", str(target), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err and len(err) < 600
    assert not out.exists()
    return err


def _child(tmp_path: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper_ab.cli", "ingest", "esper-lite",
                           str(target), "--out", str(tmp_path / "o.csv")],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("inside", [False, True])
def test_a_fifo_is_refused_without_being_opened(tmp_path, inside):
    d = tmp_path / "run"
    d.mkdir()
    os.mkfifo(d / "events.jsonl")        # nobody writes: opening it would block forever
    res = _child(tmp_path, tmp_path if inside else d / "events.jsonl")
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "a FIFO, not a regular file" in line


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_behind_the_name_is_refused(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "events.jsonl").symlink_to("/dev/zero")
    for target in (tmp_path, Path("/dev/zero")):
        res = _child(tmp_path, target)
        assert res.returncode == 2, res.stderr
        assert "\n" not in res.stderr.strip() and "a device, not a regular file" in res.stderr


def test_a_line_over_the_limit_is_one_error_and_memory_stays_bounded(tmp_path, capsys):
    f = _write(tmp_path, [GERM])
    with open(f, "ab") as fh:          # a 24 MiB line of JSON-looking junk, no newline
        chunk = b'{"event_type": "x", "data": "' + b"a" * (1 << 20)
        for _ in range(24):
            fh.write(chunk)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"longer than {MAX_LINE:,} bytes") as err:
            ingest_esper_lite(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"{f}:2:" in str(err.value)
    assert peak < 4 * MAX_LINE                 # one bounded piece, not the 24 MiB line
    assert "longer than" in _cli_one_line(tmp_path, f, capsys)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200_000])
def test_json_nested_too_deep_is_one_error(tmp_path, capsys, depth):
    deep = '{"event_type": "X", "data": ' + "[" * depth + "]" * depth + "}\n"
    f = _write(tmp_path, [GERM, deep])
    with pytest.raises(DataError, match=f"nested deeper than {MAX_DEPTH}"):
        ingest_esper_lite(f)
    assert f"{f}:2:" in _cli_one_line(tmp_path, f, capsys)


def test_nesting_up_to_the_limit_and_many_lists_are_read(tmp_path):
    wide = json.dumps({"event_type": "EPOCH_COMPLETED", "data": {"seeds": [[1]] * 500}}) + "\n"
    ok = ('{"event_type": "X", "data": {"a": ' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
          + "}}\n")
    res = ingest_esper_lite(_write(tmp_path, [GERM, wide, ok, G2_STRICT]))
    assert res.summary.skipped == {"EPOCH_COMPLETED": 1, "X": 1} and len(res.table) == 1


def test_an_oversized_name_is_refused_with_a_bounded_message(tmp_path, capsys):
    name = "n" * (50 * MAX_NAME)
    f = _write(tmp_path, [_ev("SEED_GERMINATED", blueprint_id=name, params=3)])
    with pytest.raises(DataError, match=f"blueprint_id of {len(name):,} characters"):
        ingest_esper_lite(f)
    assert len(_cli_one_line(tmp_path, f, capsys)) < 600


def test_formula_cells_are_neutralized_in_the_csv(tmp_path):
    bad = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tx", "plain"]
    lines = [_ev("SEED_GERMINATED", seed=f"seed_{i}", slot=f"r{i}", blueprint_id=b, params=3)
             for i, b in enumerate(bad)]
    res = ingest_esper_lite(_write(tmp_path, lines))
    out = write_table(res.table, tmp_path / "o.csv")
    back = pd.read_csv(out, keep_default_na=False)
    assert list(back["blueprint"]) == ["'" + b for b in bad[:5]] + ["plain"]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t"))
                   for col in back.columns for cell in back[col].astype(str))
    assert list(res.table["blueprint"]) == bad           # the table itself is untouched
    neg = pd.DataFrame({"statistic": [-0.5], "strategy": ["-x"]})
    back = pd.read_csv(write_table(neg, tmp_path / "n.csv"))
    assert back["statistic"][0] == -0.5 and back["strategy"][0] == "'-x"   # numbers kept


def _plugin_g2(value: str, passed: bool, gate: str = "esper_lite_kasmina") -> str:
    ok = ["global_improvement_1.00%", "seed_ready", f"esper_ab_gate_{gate}"]
    bad: list[str] = []
    (ok if passed else bad).append(f"esper_ab_g2_pass_{value}" if passed
                                   else f"esper_ab_g2_threshold_failed_{value}")
    return _ev("SEED_GATE_EVALUATED", gate="G2", passed=passed, checks_passed=ok,
               checks_failed=bad, message="Improvement: 1.00%; esper-ab gate")


def test_plugin_runs_are_labelled_by_their_gate_and_carry_its_value(tmp_path):
    _write(tmp_path, [GERM, G2_STRICT], "native")
    _write(tmp_path, [GERM, _plugin_g2("0.0412345678", False)], "plugin")
    _write(tmp_path, [GERM, _plugin_g2("unmeasured", False, "mine")], "other")
    t = ingest_esper_lite(tmp_path).table.set_index("run")
    assert t.loc["native", "strategy"] == STRICT and t.loc["native", "statistic"] == 0.04
    assert t.loc["plugin", "strategy"] == "esper_ab:esper_lite_kasmina"
    assert t.loc["plugin", "statistic"] == 0.0412345678
    assert t.loc["other", "strategy"] == "esper_ab:mine" and pd.isna(t.loc["other", "statistic"])
    _write(tmp_path, [GERM, _plugin_g2("0.2", True), _plugin_g2("0.2", True, "b")], "mixed")
    with pytest.raises(DataError, match="one run has one gate"):
        ingest_esper_lite(tmp_path)


def test_a_plugin_run_on_permissive_gates_is_refused(tmp_path):
    perm = _ev("SEED_GATE_EVALUATED", gate="G2", passed=False,
               checks_passed=["esper_ab_gate_g"], checks_failed=[
                   "gradient_health_not_measured", "esper_ab_g2_threshold_failed_0.01"])
    with pytest.raises(DataError, match="permissive_gates=False"):
        ingest_esper_lite(_write(tmp_path, [GERM, perm]))


def test_the_number_of_seeds_is_bounded(tmp_path, monkeypatch, capsys):
    from esper_ab.integrations.esper_lite import _ingest

    monkeypatch.setattr(_ingest, "MAX_SEEDS", 3)
    lines = [_ev("SEED_GERMINATED", seed=f"seed_{i}", slot=f"r{i}", blueprint_id="norm", params=3)
             for i in range(5)]
    f = _write(tmp_path, lines)
    with pytest.raises(DataError, match="over the 3-seed limit") as err:
        ingest_esper_lite(f)
    assert f"{f}:4:" in str(err.value)
    assert "smaller folders" in _cli_one_line(tmp_path, f, capsys)
