"""Bounded, inert output (issue 19, item 6; the CSV cells of ingest are issue 23's).

Every printed message shows input values through a bounded, escaped ``repr``; terminal
control characters never reach the terminal (a blueprint name set the terminal's title
before); a 50 MB input value gives an error line of about 2000 characters, not 52 MB.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pandas as pd
import pytest

from esper_ab.errors import MAX_MESSAGE, InertStream, inert, one_line, shown
from esper_ab.stats import SimulationDesign, StrategySpec, simulate_decisions

TITLE = "\x1b]0;pwned\x07"          # OSC: sets the terminal's title
CSI = "\x1b[2J\x1b[31m"             # clears the screen, turns the text red
C1 = "\x9b31m"                      # an 8-bit CSI
BIDI = "\u202e"                     # right-to-left override
HOSTILE = (TITLE, CSI, C1, BIDI, "\x00", "\x08", "\x7f")


def _has_control(text: str) -> list[str]:
    return [c for c in set(text) if (ord(c) < 32 and c not in "\n\r\t")
            or 0x7f <= ord(c) <= 0x9f or 0x202a <= ord(c) <= 0x202e
            or 0x2066 <= ord(c) <= 0x2069]


def test_inert_strips_every_terminal_control_and_keeps_layout():
    text = "a" + "".join(HOSTILE) + "b\tc\r\nd"
    out = inert(text)
    assert _has_control(out) == [] and out.endswith("b\tc\r\nd") and out.startswith("a")


def test_one_line_is_bounded_and_one_line():
    huge = "x" * 50_000_000 + "\n" + CSI
    line = one_line(f"blueprint {huge} is unknown")
    assert len(line) < MAX_MESSAGE + 100 and "\n" not in line and _has_control(line) == []
    assert line.endswith("more characters not shown)")


def test_shown_is_bounded_and_escaped():
    value = TITLE + "y" * 50_000_000
    out = shown(value)
    assert len(out) < 100 and "\\x1b" in out and _has_control(out) == []


def test_inert_stream_delegates_but_strips():
    buf = io.StringIO()
    stream = InertStream(buf)
    assert stream.write("name " + TITLE + "\n") == len("name " + TITLE + "\n")
    stream.writelines([CSI, "ok\n"])
    assert buf.getvalue() == "name ]0;pwned\n[2J[31mok\n"
    assert stream.getvalue() == buf.getvalue()           # everything else is the stream's


@pytest.fixture(scope="module")
def hostile_csv(tmp_path_factory):
    design = SimulationDesign(
        blueprints=("attention", "norm"), n_replicates=6, seeds_per_cell=2,
        strategies=(StrategySpec("sqrt", (0.1, 0.5), signal=0.2),
                    StrategySpec("mean_abs", (0.5, 0.5), signal=0.5)))
    df = simulate_decisions(design, seed=0).drop(columns=["seed"])
    df["blueprint"] = df["blueprint"].replace({"norm": "norm" + TITLE + CSI + C1 + BIDI})
    folder = tmp_path_factory.mktemp("inert")
    good = folder / "decisions.csv"
    df.to_csv(good, index=False)
    bad = folder / "duplicate.csv"           # two identical rows: an error naming the name
    big = "b" * 5_000_000 + TITLE
    rows = pd.concat([df.head(1), df.head(1)]).assign(blueprint=big)
    pd.concat([df, rows]).to_csv(bad, index=False)
    return good, bad


def _analyze(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper_ab", "analyze", str(path), "--baseline",
                           "sqrt", "--n-boot", "50", "--n-perm", "50"],
                          capture_output=True, text=True, timeout=300)


def test_a_hostile_blueprint_name_never_reaches_the_terminal(hostile_csv):
    proc = _analyze(hostile_csv[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "norm]0;pwned" in proc.stdout                  # the name, made inert
    assert _has_control(proc.stdout) == [] and _has_control(proc.stderr) == []


def test_a_huge_hostile_value_gives_one_bounded_error_line(hostile_csv):
    proc = _analyze(hostile_csv[1])
    assert proc.returncode == 2, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-ab: error:")
    assert len(lines[0]) < MAX_MESSAGE + 100 and _has_control(lines[0]) == []
    assert len(proc.stdout) < 10_000
