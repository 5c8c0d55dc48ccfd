"""The reference gate and the candidates never share a name: the reference (the space's
``baseline`` preset, ``esper_lite_baseline``) is ``reference`` in every table and
``reference (esper_lite_baseline)`` in text, while a candidate whose strategy is ``baseline``
is the trial ``t001-baseline``. Checked on every surface a sweep writes: the console summary,
the confirmation, report.html, the MLflow note and tables."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from report_helpers import confirmed, sweep_analysis

from esper_ab.study.confirmation import format_confirmation
from esper_ab.study.outcome import parent_note, parent_tables
from esper_ab.study.report import render_html, sweep_figures
from esper_ab.study.summary import format_summary
from esper_ab.trial import (
    BASELINE_LABEL,
    LEGACY_BASELINE_LABEL,
    TrialParams,
    as_reference,
    reference_name,
)

# the first candidate's strategy is the one called ``baseline`` (the raw gradient ratio)
TRIALS = (TrialParams("baseline", {}, threshold=0.05),
          TrialParams("exponent", {"a": 0.3}, threshold=0.02),
          TrialParams("first_order_value", {"mode": "raw"}, threshold=0.0))
REF = "reference (esper_lite_baseline)"


@pytest.fixture(scope="module")
def sweep():
    sa = sweep_analysis(TRIALS, n_boot=50, n_perm=50)
    return (sa, *confirmed(sa))


def _names_called_baseline(text: str) -> list[str]:
    """Every place ``text`` uses the bare word 'baseline' as a name: quoted, or alone in a
    table cell (the role word in prose, 'the baseline', and ``t001-baseline``,
    ``esper_lite_baseline``, ``_vs_baseline`` are not names of the reference; nor is the
    role 'baseline' heading a report column beside the role 'winner' or 'best', as MLflow's
    metric arms ``baseline.*`` / ``winner.*``)."""
    quoted = re.findall(r"['\"`]baseline['\"`]", text)
    cells = [c for c in re.split(r"\s{2,}|\|", text) if c.strip() == "baseline"]
    html_cells = re.findall(r"<td[^>]*>\s*baseline\s*</td>", text)
    for row in re.findall(r"<tr>(.*?)</tr>", text, flags=re.S):      # header rows: roles
        heads = re.findall(r"<th[^>]*>\s*(.*?)\s*</th>", row, flags=re.S)
        if heads.count("baseline") != heads.count("winner") + heads.count("best"):
            html_cells.append(row)
    return quoted + cells + html_cells


def test_labels_cannot_collide():
    assert BASELINE_LABEL not in {LEGACY_BASELINE_LABEL, "candidate"}
    assert reference_name("esper_lite_baseline") == REF
    labels = [f"t{n:03d}-{p.strategy}" for n, p in enumerate(TRIALS, 1)]
    assert "t001-baseline" in labels and BASELINE_LABEL not in labels


def test_the_console_summary_names_the_reference_apart(sweep):
    sa, *_ = sweep
    assert "t001-baseline" in set(sa.leaderboard["trial"])
    text = format_summary(sa)
    assert REF in text and "t001-baseline" in text
    assert _names_called_baseline(text) == [], text
    assert "the baseline 'baseline'" not in text
    # the verdict's reasoning names the reference by its label, never as 'baseline'
    assert "'baseline'" not in sa.analysis.verdict.reason


def test_the_confirmation_names_the_reference_apart(sweep):
    _, sa, conf, table = sweep
    assert set(table["strategy"]) >= {BASELINE_LABEL, "t001-baseline"}
    text = format_confirmation(conf)
    assert f"the {REF} gate (ref)" in text
    assert _names_called_baseline(text) == [], text


def test_report_and_mlflow_name_the_reference_apart(sweep):
    _, sa, conf, _ = sweep
    page = render_html(sa, sweep_figures(sa), confirmation=conf)
    assert f"the {REF} gate" in page and "t001-baseline" in page
    assert _names_called_baseline(page) == []
    note = parent_note(sa)
    assert "reference (`esper_lite_baseline`)" in note
    assert _names_called_baseline(note.replace("`esper_lite_baseline`", "")) == []
    tables = parent_tables(sa)
    names = set(tables["tables/per_blueprint_selected.json"]["trial"])
    assert BASELINE_LABEL in names and "t001-baseline" in names
    assert LEGACY_BASELINE_LABEL not in names


def test_decisions_written_by_earlier_versions_read_as_the_reference():
    old = pd.DataFrame({"strategy": ["baseline", "baseline", "candidate"],
                        "passed": [True, False, True]})
    new = as_reference(old)
    assert list(new["strategy"]) == [BASELINE_LABEL, BASELINE_LABEL, "candidate"]
    assert list(old["strategy"]) == ["baseline", "baseline", "candidate"]   # not in place
    # a table that already has the reference keeps a candidate that is literally 'baseline'
    mixed = pd.DataFrame({"strategy": [BASELINE_LABEL, "baseline"], "passed": [True, True]})
    assert list(as_reference(mixed)["strategy"]) == [BASELINE_LABEL, "baseline"]


def test_the_confirmation_reads_in_100_columns(sweep):
    """The confirmation off a terminal: the verdict's lines wrapped between words (every
    word of the verdict kept, in order), the table aligned, nothing wider than 100."""
    _, sa, conf, _ = sweep
    text = format_confirmation(conf, width=100)
    lines = text.splitlines()
    assert max(map(len, lines[1:])) <= 100 and "..." not in text
    verdict = " ".join(x for x in conf.verdict.summary_lines() if x).split()
    assert " ".join(lines[1:]).split()[:len(verdict)] == verdict
    head = next(i for i, x in enumerate(lines) if x.startswith("blueprint"))
    rows = [x.split() for x in lines[head + 2:]]
    assert {r[0] for r in rows} == set(conf.decisions["blueprint"])
    assert all(r[1].isdigit() and r[2].isdigit() for r in rows)     # counts as integers
