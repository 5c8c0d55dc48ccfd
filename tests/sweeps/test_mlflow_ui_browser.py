"""MLflow 3.17's UI in headless Chromium, against a real ``mlflow server``: the address
esper-ab prints (``tracking.ui_url``) opens the experiment in the model-training view (its
runs table, the parent run named by space and verdict), while the bare experiment address
opens the GenAI overview whatever the experiment's ``mlflow.experimentKind`` tag says (the
3.17 UI reads the view from the URL's ``workflowType``, else the browser's last choice).

Skipped, saying why, when Chromium cannot be installed (``test_report_browser.chromium``).
"""

from __future__ import annotations

import html
import re

import pytest
from sweep_helpers import space
from test_report_browser import chromium, dump_dom  # noqa: F401  (chromium: the fixture)

from esper_ab.study.space import space_summary
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.tracking import SweepTracker, ui_url

pytestmark = pytest.mark.slow        # an mlflow server and a browser start


def _page_text(browser: str, url: str) -> str:
    """The text Chromium renders at ``url`` (scripts run, a fresh profile: no stored view)."""
    body = dump_dom(browser, url)
    body = re.sub(r"<script.*?</script>|<style.*?</style>", "", body, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def test_the_printed_address_opens_the_model_training_view(chromium, mlflow_server):  # noqa: F811
    tracker = SweepTracker(mlflow_server)
    spec = parse_sweep_spec(space(name="uiview"))
    parent = tracker.start_sweep(spec, space=space_summary(spec), run_name="uiview-start")
    tracker.set_tags(parent, {"esper_ab.verdict_kind": "undecided"})
    name = tracker.run_name(parent)
    assert name.startswith("uiview · undecided · ")
    exp = tracker.client.get_run(parent).info.experiment_id
    assert tracker.client.get_experiment(exp).tags["mlflow.experimentKind"] == \
        "custom_model_development"

    training = _page_text(chromium, ui_url(mlflow_server, exp))
    assert "Run Name" in training and name in training        # the runs table, our run
    assert "Total Cost" not in training and "Token Usage" not in training

    bare = _page_text(chromium, f"{mlflow_server}/#/experiments/{exp}")   # the control
    assert "Token Usage" in bare and name not in bare              # the GenAI overview

    run_page = _page_text(chromium, ui_url(mlflow_server, exp, parent))
    assert name in run_page and "Token Usage" not in run_page
