"""Pareto front and pass-rate CIs against independent reference computations; report.html's
layout and numbers against the decisions table (pandas)."""

from __future__ import annotations

import html
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from esper_ab.study.analysis import pareto_front
from esper_ab.study.report import pass_rate_ci

DESCRIPTION = "which gate is fair to <every> blueprint & predicts value"


def _front_reference(points, directions):
    """O(n^2) definition: i is on the front iff no j is at least as good everywhere and
    strictly better somewhere (NaN rows never are)."""
    out = []
    for i, p in enumerate(points):
        if not np.all(np.isfinite(p)):
            out.append(False)
            continue
        better = lambda a, b, d: a > b if d == "max" else a < b  # noqa: E731
        geq = lambda a, b, d: a >= b if d == "max" else a <= b  # noqa: E731
        dominated = False
        for j, q in enumerate(points):
            if j == i or not np.all(np.isfinite(q)):
                continue
            if all(geq(q[k], p[k], d) for k, d in enumerate(directions)) and any(
                    better(q[k], p[k], d) for k, d in enumerate(directions)):
                dominated = True
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("directions", [["max", "min"], ["max", "max"], ["min", "min", "max"]])
def test_pareto_front_matches_the_definition(directions):
    rng = np.random.default_rng(len(directions))
    for _ in range(20):
        pts = rng.integers(0, 4, size=(12, len(directions))).astype(float)   # many ties
        pts[rng.random(12) < 0.1, 0] = np.nan
        np.testing.assert_array_equal(pareto_front(pts, directions),
                                      _front_reference(pts, directions))


def test_pass_rate_ci_point_and_coverage():
    rng = np.random.default_rng(0)
    rows = [{"replicate": r, "blueprint": bp, "passed": bool(rng.random() < p)}
            for r, (bp, p) in itertools.product(range(30), [("a", 0.2), ("b", 0.7)])
            for _ in range(3)]
    df = pd.DataFrame(rows)
    ci = pass_rate_ci(df, n_boot=2000, seed=1).set_index("blueprint")
    ref = df.groupby("blueprint")["passed"].mean()
    np.testing.assert_allclose(ci["pass_rate"], ref.loc[ci.index])
    assert (ci["ci_low"] <= ci["pass_rate"]).all() and (ci["pass_rate"] <= ci["ci_high"]).all()
    # the cluster bootstrap's spread matches the replicate-level standard error
    per_rep = df.groupby(["blueprint", "replicate"])["passed"].mean().unstack()
    se = per_rep.std(axis=1, ddof=1) / np.sqrt(per_rep.shape[1])
    width = (ci["ci_high"] - ci["ci_low"]) / (2 * 1.96)
    np.testing.assert_allclose(width, se.loc[ci.index], rtol=0.25)


# -- report.html and the figures of a sweep analysis built in-process ------------------------
@pytest.fixture(scope="module")
def analysis():
    from report_helpers import sweep_analysis

    return sweep_analysis()


@pytest.fixture(scope="module")
def page(analysis):
    from esper_ab.study.report import render_html, sweep_figures

    return render_html(analysis, sweep_figures(analysis))


def _rows(segment: str) -> list[list[str]]:
    body = segment.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", tr, flags=re.S)
            for tr in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)]


def test_the_page_reads_verdict_table_plots_then_trials(analysis, page):
    at = {k: page.index(k) for k in ("id='verdict'", "id='per-blueprint'", "<img ",
                                     "<details id='trials'>")}
    assert at["id='verdict'"] < at["id='per-blueprint'"] < at["<img "] \
        < at["<details id='trials'>"]
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page   # no Pareto
    assert "pareto" not in page.lower()            # one objective: no 2-point front
    assert "class='verdict winner'" in page and "t002-first_order_value" in page
    assert html.escape(DESCRIPTION) in page and DESCRIPTION not in page   # escaped
    # the trials last, collapsible, best balanced accuracy first (NaN last)
    trials = page[at["<details id='trials'>"]:]
    assert trials.rstrip().endswith("</html>") and "</details>" in trials
    shown = [r[0] for r in _rows(trials)]
    board = analysis.leaderboard
    want = sorted(zip(board["trial"], board["balanced_accuracy"], strict=True),
                  key=lambda tv: (math.isnan(tv[1]), -tv[1] if not math.isnan(tv[1]) else 0))
    assert shown == [t for t, _ in want] and shown[0] == "t002-first_order_value"


def test_the_per_blueprint_table_is_the_baseline_vs_the_winner(analysis, page):
    from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL

    segment = page[page.index("id='per-blueprint'"):page.index("<img ")]
    rows = {r[0]: r for r in _rows(segment)}
    d = analysis.winner.decisions
    assert set(rows) == set(d["blueprint"])
    header = segment.split("</thead>", 1)[0]
    assert header.count(">baseline<") == header.count(">winner<") == 5
    for bp, r in rows.items():
        # columns: blueprint, seeds, valuable, mean value, pass rate (baseline, winner), ...
        base = d[(d["strategy"] == BASELINE_LABEL) & (d["blueprint"] == bp)]
        cand = d[(d["strategy"] == CANDIDATE_LABEL) & (d["blueprint"] == bp)]
        assert int(r[1]) == len(base) and int(r[2]) == int(base["valuable"].sum())
        assert float(r[3]) == pytest.approx(base["value"].mean(), rel=1e-3)
        assert float(r[4]) == pytest.approx(base["passed"].mean(), rel=1e-3, abs=1e-9)
        assert float(r[5]) == pytest.approx(cand["passed"].mean(), rel=1e-3, abs=1e-9)
        valuable = cand[cand["valuable"]]
        if len(valuable):
            assert float(r[7]) == pytest.approx(valuable["passed"].mean(), rel=1e-3, abs=1e-9)
        else:
            assert r[7] == "-"                       # undefined, not 0


@pytest.mark.parametrize(("kind", "colour"), [("winner", "green"), ("not_better", "grey"),
                                              ("undecided", "amber")])
def test_the_verdict_box_is_colour_coded_by_kind(analysis, kind, colour):
    from report_helpers import with_verdict

    from esper_ab.study.report import STYLE, render_html

    sa = with_verdict(analysis, kind)
    page = render_html(sa, {})
    assert f"class='verdict {kind}'" in page
    box = page[page.index("id='verdict'"):]
    assert box.index("&lt;headline&gt;") < box.index("detail one") < box.index("detail two")
    bg = re.search(rf"\.verdict\.{kind}{{background:#(\w\w)(\w\w)(\w\w)", STYLE).groups()
    r, g, b = (int(x, 16) for x in bg)
    if colour == "green":
        assert g > r and g > b
    elif colour == "grey":                    # a cool grey: never green-tinted
        assert b >= g >= r - 2 and max(r, g, b) - min(r, g, b) < 16
    else:
        assert r > g > b


def test_statistic_vs_value_plots_every_measured_seed_per_blueprint(analysis):
    from esper_ab.study.report import sweep_figures
    from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL

    fig = sweep_figures(analysis)["statistic_vs_value"]
    d = analysis.winner.decisions
    bps = list(pd.unique(d["blueprint"]))
    axes = fig.axes
    assert len(axes) == 2 * len(bps)
    for i, label in enumerate((BASELINE_LABEL, CANDIDATE_LABEL)):
        for j, bp in enumerate(bps):
            g = d[(d["strategy"] == label) & (d["blueprint"] == bp)]
            x = pd.to_numeric(g["statistic"], errors="coerce")
            ok = np.isfinite(x) & np.isfinite(g["value"])
            ax = axes[i * len(bps) + j]
            n = sum(len(c.get_offsets()) for c in ax.collections)
            assert n == int(ok.sum()), (label, bp)
            assert ax.get_title().startswith(f"{bp}: rho")


@pytest.mark.parametrize("kind", ["winner", "not_better", "undecided"])
def test_the_fidelity_page_colours_its_verdict_by_kind(kind):
    from esper_ab.study.agreement import render_fidelity_html

    table = pd.DataFrame({"config": ["a"], "admits": [1]})
    ranks = {"configs": 1, "spearman_rho": math.nan, "kendall_tau": math.nan,
             "same_best": True}
    page = render_fidelity_html(sweep="s", table=table, ranks=ranks, verdict="v<1>",
                                replay_verdict="r", compute={}, objective="mcc", kind=kind)
    assert f'class="verdict {kind}"' in page and "v&lt;1&gt;" in page
    assert f".verdict.{kind}{{background:#" in page          # a colour rule for each kind


def test_a_confirmed_report_leads_with_the_confirmations_answer_and_table(analysis):
    """The confirmation first: its headline as a sentence, its per-blueprint table computed
    from the confirmation replicates' decisions (checked by hand against them), its plot;
    the search stage after it, in the muted section."""
    from report_helpers import confirmed

    from esper_ab.study.report import render_html, sweep_figures
    from esper_ab.trial import BASELINE_LABEL

    spec = analysis.record.spec
    sa, conf, table = confirmed(analysis)
    v = conf.verdict
    page = render_html(sa, sweep_figures(sa), confirmation=conf)
    at = {k: page.index(k) for k in ("id='confirmed-verdict'", "class='answer'",
                                     "id='confirmed-per-blueprint'", "alt='confirmed pass rate'",
                                     "id='search-stage'", "id='verdict'")}
    assert list(at.values()) == sorted(at.values())        # the answer, then the search
    answer = page[at["class='answer'"]:].split("</p>", 1)[0]
    assert html.escape(v.headline.removeprefix("Verdict: ")) in answer
    focus = v.winner or str(conf.analysis.metrics.overall.drop(index=BASELINE_LABEL)[
        spec.selection.objective].astype(float).idxmax())
    segment = page[at["id='confirmed-per-blueprint'"]:at["alt='confirmed pass rate'"]]
    rows = {r[0]: r for r in _rows(segment)}
    assert set(rows) == set(table["blueprint"])
    for bp, r in rows.items():       # blueprint, seeds, valuable, mean value, pass rate x2
        base = table[(table["strategy"] == BASELINE_LABEL) & (table["blueprint"] == bp)]
        cand = table[(table["strategy"] == focus) & (table["blueprint"] == bp)]
        assert int(r[1]) == len(base)
        assert float(r[4]) == pytest.approx(base["passed"].mean(), rel=1e-3, abs=1e-9)
        assert float(r[5]) == pytest.approx(cand["passed"].mean(), rel=1e-3, abs=1e-9)
    assert "#search-stage{color:#555;font-size:13px" in page   # visibly secondary
