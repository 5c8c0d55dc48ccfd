"""The progress reporter (bar on a terminal, timestamped lines off one) and --log-file."""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import textwrap

from esper_ab.progress import Progress, report_note

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\S+): (\d+)/(\d+)( \w+)? \(\d+\.\d s\)$")


def test_lines_mode_writes_one_timestamped_line_per_update():
    out = io.StringIO()
    p = Progress(mode="lines", out=out)
    for done in range(4):
        p("record", done, 3)
    p("record", 3, 3)                         # no change: no new line
    p("search", 1, 2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m[1], int(m[2]), int(m[3])) for m in parsed] == [
        ("record", 0, 3), ("record", 1, 3), ("record", 2, 3), ("record", 3, 3), ("search", 1, 2)]
    assert parsed[0][4] == " episodes" and parsed[4][4] == " trials"


def test_min_interval_keeps_the_first_and_last_line_of_a_phase():
    out = io.StringIO()
    p = Progress(mode="lines", out=out, min_interval_s=3600)
    for done in range(11):
        p("incubate", done, 10)
    got = [int(LINE.match(line)[2]) for line in out.getvalue().splitlines()]
    assert got == [0, 10]


def test_disabled_reports_nothing_but_notes_still_print():
    out = io.StringIO()
    p = Progress(enabled=False, mode="lines", out=out)
    p("record", 1, 2)
    report_note(p, "resources: 1 CPU per trial/task, no GPU")
    report_note(lambda *a: None, "a plain callable has no note: ignored")
    assert out.getvalue() == "resources: 1 CPU per trial/task, no GPU\n"


def test_bar_mode_draws_on_stderr_not_on_the_lines_stream(capsys):
    out = io.StringIO()
    with Progress(mode="bar", out=out) as p:
        for done in range(3):
            p("search", done, 2)
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert "search" in err and "2/2" in err


def test_a_pickled_reporter_is_silent():   # Tune pickles callbacks with its state
    p = pickle.loads(pickle.dumps(Progress(mode="lines", out=None)))
    assert p.enabled is False
    p("search", 1, 2)                          # does not raise, prints nothing


def test_log_file_keeps_python_c_level_and_child_output(tmp_path):
    log = tmp_path / "run.log"
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        from esper_ab.progress import tee_output, console_is_tty
        with tee_output({str(log)!r}):
            print("from python stdout")
            print("from python stderr", file=sys.stderr)
            os.write(1, b"from fd 1\\n")
            subprocess.run(["sh", "-c", "echo from a child process"], check=True)
            sys.stderr.write("bar 1/3\\rbar 2/3\\rbar 3/3\\n")
            print("tty inside:", console_is_tty())
        print("after the tee")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    for needle in ("from python stdout", "from python stderr", "from fd 1",
                   "from a child process", "tty inside: False"):
        assert needle in text, text
        assert needle in proc.stdout + proc.stderr      # the console still gets it all
    assert "bar 3/3" in text and "bar 1/3" not in text  # a redrawn line keeps its last state
    assert "after the tee" not in text and "after the tee" in proc.stdout


def test_log_file_that_cannot_be_opened_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "esper_ab", "report", "--experiment", "x",
                           "--out", str(tmp_path), "--log-file", str(tmp_path / "no" / "x.log")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log-file=" in lines[0] and "writable" in lines[0], proc.stderr
