"""The per-blueprint table esper-ab logs shows in MLflow 3.17's table view: headless Chromium
against a real ``mlflow server`` opens the parent run's ``tables/per_blueprint.json`` in the
run's artifact view, which renders it as a table ("View as table": a ``role="table"`` grid)
because the run's ``mlflow.loggedArtifacts`` tag lists it as a table. Every row and cell is
checked against the frame logged (numbers as shown: 4 significant digits), also after the
table was logged a second time (replaced, not appended).

Skipped, saying why, when Chromium cannot be installed (``test_report_browser.chromium``).
"""

from __future__ import annotations

import html
import re

import pytest
from report_helpers import sweep_analysis
from test_report_browser import chromium, dump_dom  # noqa: F401  (chromium: the fixture)

from esper_ab.study.outcome import parent_tables
from esper_ab.study.space import space_summary
from esper_ab.tracking import SweepTracker, rounded, ui_url

pytestmark = pytest.mark.slow        # an mlflow server and a browser start

TABLE = "tables/per_blueprint.json"


def _dom(browser: str, url: str, tries: int = 3) -> str:
    """The page once its table view rendered. Chromium dumps the DOM when its virtual-time
    budget ends; on a loaded machine the MLflow UI's scripts and artifact fetch may not have
    finished by then (seen once at load 10), so a dump without the grid is taken again, in a
    fresh profile, up to ``tries`` times; what is checked on the grid does not change."""
    for _ in range(tries):
        dom = dump_dom(browser, url, window="1400,1200", budget_ms=30000, timeout=300)
        if 'role="table"' in dom:
            break
    return dom


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def _grid(dom: str) -> list[list[str]]:
    """The rows of the page's ``role="table"`` grid: header cells, then data cells."""
    assert dom.count('role="table"') == 1, "no table view on the page"
    grid = dom.split('role="table"', 1)[1]
    rows = re.split(r'<div[^>]*role="row"[^>]*>', grid)[1:]
    return [[_text(c.split("</div>", 1)[0])
             for c in re.split(r'<div[^>]*role="(?:cell|columnheader)"[^>]*>', r)[1:]]
            for r in rows]


def _shown(v) -> str:
    if v is None or v != v:
        return "null"
    if isinstance(v, float):
        v = rounded(v)
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def test_the_per_blueprint_table_shows_in_the_table_view(chromium, mlflow_server):  # noqa: F811
    sa = sweep_analysis(n_boot=20, n_perm=20)
    tracker = SweepTracker(mlflow_server)
    parent = tracker.start_sweep(sa.record.spec, space=space_summary(sa.record.spec),
                                 run_name="tableview")
    frame = parent_tables(sa)[TABLE]
    tracker.log_table(parent, frame, TABLE)
    tracker.log_table(parent, frame, TABLE)             # replaced, not appended
    exp = tracker.client.get_run(parent).info.experiment_id
    page = ui_url(mlflow_server, exp, parent).replace(
        f"/runs/{parent}", f"/runs/{parent}/artifacts/{TABLE}")
    dom = _dom(chromium, page)
    assert "View as table" in _text(dom)
    header, *rows = [r for r in _grid(dom) if r]
    assert header[:len(frame.columns)] == list(frame.columns)
    assert len(rows) == len(frame)                       # once, not twice
    want = [[_shown(v) for v in row] for row in frame.astype(object).itertuples(
        index=False, name=None)]
    assert sorted(r[:len(frame.columns)] for r in rows) == sorted(want)
    assert {r[0] for r in rows} == set(frame["arm"]) and len(set(frame["arm"])) == 2
