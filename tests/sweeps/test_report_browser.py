"""``report.html`` in a real browser: headless Chromium (Debian's ``chromium``) loads the page
and a probe script, added to a copy of the page, reports what rendered: the verdict box, the
per-blueprint table, every image (decoded, non-zero size), the layout order, and every error
(script errors, failed resources, ``console.error``). Chromium's own log is checked for
uncaught errors and console output from the page too.

Chromium is installed by this module's fixture when it is missing (``apt-get install -y
chromium``, as root, unless ``ESPER_AB_NO_APT`` is set); the test is skipped, saying why, when
it cannot be installed.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow        # a browser start, and a sweep analysis with its plots

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--window-size=1280,2000",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom")

# Errors are collected from the first script on: window.onerror (uncaught), rejected promises,
# failed resources (capture phase), console.error. The report itself has no script.
HEAD_PROBE = """<script>window.__errors=[];
window.addEventListener('error',function(e){var t=e.target;window.__errors.push(
 t&&t!==window&&(t.src||t.href)?'resource failed: '+(t.src||t.href).slice(0,80)
 :'uncaught: '+e.message)},true);
window.addEventListener('unhandledrejection',function(e){window.__errors.push(
 'rejection: '+String(e.reason))});
var __ce=console.error;console.error=function(){window.__errors.push('console.error: '+
 [].join.call(arguments,' '));__ce.apply(console,arguments)};</script>"""

TAIL_PROBE = """<script>window.addEventListener('load',function(){
function box(el){if(!el)return null;var r=el.getBoundingClientRect();
 return {top:r.top+window.scrollY,height:r.height,width:r.width}}
var v=document.getElementById('verdict'),t=document.getElementById('per-blueprint');
var out={errors:window.__errors,
 images:[].map.call(document.images,function(i){return {alt:i.alt,complete:i.complete,
  natural:[i.naturalWidth,i.naturalHeight],shown:[i.width,i.height],
  top:box(i).top,data:i.src.slice(0,22)==='data:image/png;base64,'}}),
 verdict:v&&{kind:v.dataset.kind,text:v.innerText,box:box(v),
  background:getComputedStyle(v).backgroundColor},
 table:t&&{box:box(t),rows:[].map.call(t.tBodies[0].rows,function(r){
  return [].map.call(r.cells,function(c){return c.innerText})}),
  header:t.tHead.innerText},
 trials:(function(d){return d&&{open:d.open,box:box(d),
  summary:d.querySelector('summary').innerText}})(document.getElementById('trials'))};
var p=document.createElement('pre');p.id='esper-probe';p.textContent=JSON.stringify(out);
document.body.appendChild(p)});</script>"""


def _install_chromium() -> tuple[str | None, str]:
    """Install Debian's chromium; (path, '') or (None, why not)."""
    if os.environ.get("ESPER_AB_NO_APT"):
        return None, "chromium is not installed and ESPER_AB_NO_APT is set"
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "chromium is not installed and apt-get cannot run here (needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "chromium"]
    why = ""
    for cmd in (install, [apt, "update", "-q"], install):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(cmd[1:3])} failed: {type(exc).__name__}"
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        why = f"apt-get {cmd[1]} exited {done.returncode}: {why[0][:200]}"
        found = shutil.which("chromium")
        if cmd[1] == "install" and found:
            return found, ""
    return None, f"chromium could not be installed ({why})"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        path, why = _install_chromium()
        if path is None:
            pytest.skip(why)
    return path



def dump_dom(browser: str, url: str, *, window: str = "1280,1200", budget_ms: int = 20000,
             timeout: int = 180) -> str:
    """The DOM Chromium renders at ``url`` after its scripts ran, in a fresh profile (no
    stored view)."""
    with tempfile.TemporaryDirectory(prefix="esper_ab_chromium_") as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", f"--window-size={window}",
             f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}", "--dump-dom",
             url],
            capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _load(chromium: str, page: Path) -> tuple[dict, str]:
    """The probe's report and Chromium's log of ``page`` (a copy with the probe added)."""
    text = page.read_text(encoding="utf-8")
    probed = page.with_name("probed.html")
    probed.write_text(text.replace("<head>", "<head>" + HEAD_PROBE, 1)
                      .replace("</body>", TAIL_PROBE + "</body>", 1), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="esper_ab_chromium_") as profile:
        done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                               probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="esper-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert done.returncode == 0 and found, (done.returncode, done.stderr[-2000:])
    return json.loads(html.unescape(found.group(1))), done.stderr


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from report_helpers import sweep_analysis

    from esper_ab.study.report import render_html, sweep_figures

    sa = sweep_analysis()
    page = tmp_path_factory.mktemp("report") / "report.html"
    page.write_text(render_html(sa, sweep_figures(sa)), encoding="utf-8")
    return sa, page


def test_report_renders_in_chromium(chromium, report):
    sa, page = report
    probe, log = _load(chromium, page)
    assert probe["errors"] == []
    assert not [line for line in log.splitlines()
                if "Uncaught" in line or ("CONSOLE" in line and "probed.html" in line)]
    # the verdict, first, green for a winner
    v = probe["verdict"]
    assert v["kind"] == "winner" and v["box"]["height"] > 20
    assert "WINNER" in v["text"].upper() and sa.winner.label in v["text"]
    r, g, b = (int(x) for x in re.findall(r"\d+", v["background"])[:3])
    assert g > r and g > b
    # the per-blueprint table: one row per blueprint, baseline and winner side by side
    t = probe["table"]
    blueprints = set(sa.winner.decisions["blueprint"])
    assert {row[0] for row in t["rows"]} == blueprints and t["box"]["height"] > 20
    assert t["header"].count("baseline") == 5 and t["header"].count("winner") == 5
    # every image decoded and shown (embedded, nothing to fetch)
    imgs = probe["images"]
    assert len(imgs) == 3 and all(i["data"] for i in imgs)      # no Pareto: one objective
    for i in imgs:
        assert i["complete"] and min(i["natural"]) > 0 and min(i["shown"]) > 0, i
    # reading order on screen: verdict, table, plots, then the collapsed trials
    trials = probe["trials"]
    assert v["box"]["top"] < t["box"]["top"] < min(i["top"] for i in imgs) \
        < trials["box"]["top"]
    assert trials["open"] is False and "trial(s)" in trials["summary"]


def test_a_broken_image_is_caught(chromium, tmp_path):
    """The probe sees what it must: a missing file and a script error."""
    page = tmp_path / "report.html"
    page.write_text("<!doctype html><html><head></head><body><div id='verdict'></div>"
                    "<img alt='gone' src='missing.png'><script>nope()</script></body></html>")
    probe, log = _load(chromium, page)
    assert probe["images"][0]["natural"] == [0, 0]
    assert any(e.startswith("resource failed") for e in probe["errors"])
    assert any(e.startswith("uncaught") for e in probe["errors"])
    assert "Uncaught" in log


CONFIRMED_PROBE = """<script>window.addEventListener('load',function(){
function top(id){var e=document.getElementById(id);return e?e.getBoundingClientRect().top
 +window.scrollY:null}
function px(sel){var e=document.querySelector(sel);return e?parseFloat(getComputedStyle(e)
 .fontSize):null}
var t=document.getElementById('confirmed-per-blueprint');
var out={errors:window.__errors,top:{answer:top('confirmed-verdict'),
 table:top('confirmed-per-blueprint'),search:top('search-stage'),verdict:top('verdict')},
 answer:document.querySelector('.answer').innerText,answer_px:px('.answer'),
 search_headline_px:px('#search-stage .headline'),
 rows:t?t.tBodies[0].rows.length:0,
 images:[].map.call(document.images,function(i){return [i.alt,i.naturalWidth,
  i.naturalHeight]})};
var p=document.createElement('pre');p.id='esper-probe';p.textContent=JSON.stringify(out);
document.body.appendChild(p)});</script>"""


def test_a_confirmed_report_puts_the_answer_first_in_chromium(chromium, report, tmp_path):
    """The confirmation's answer as a large headline, its per-blueprint table and plot above
    the search stage, which renders smaller; a screenshot is kept for a person to look at
    (``ESPER_AB_SCREENSHOTS=DIR`` copies it there)."""
    from report_helpers import confirmed

    from esper_ab.study.report import render_html, sweep_figures

    sa, conf, table = confirmed(report[0])
    page = tmp_path / "confirmed.html"
    text = render_html(sa, sweep_figures(sa), confirmation=conf)
    page.write_text(text.replace("<head>", "<head>" + HEAD_PROBE, 1)
                    .replace("</body>", CONFIRMED_PROBE + "</body>", 1), encoding="utf-8")
    shot = tmp_path / "confirmed.png"
    with tempfile.TemporaryDirectory(prefix="esper_ab_chromium_") as profile:
        flags = [f for f in FLAGS if f != "--dump-dom"]
        done = subprocess.run([chromium, *flags, f"--user-data-dir={profile}",
                               f"--screenshot={shot}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-1000:]
        dumped = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                                 page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="esper-probe">(.*?)</pre>', dumped.stdout, flags=re.S)
    assert found, dumped.stderr[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == []
    top = probe["top"]
    assert top["answer"] < top["table"] < top["search"] < top["verdict"]
    assert probe["answer"] == conf.verdict.headline.removeprefix("Verdict: ")
    assert probe["answer_px"] > 1.5 * probe["search_headline_px"]     # visibly secondary
    assert probe["rows"] == table["blueprint"].nunique()
    assert all(w > 0 and h > 0 for _, w, h in probe["images"])
    assert "confirmed pass rate" in [alt for alt, _, _ in probe["images"]]
    if os.environ.get("ESPER_AB_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["ESPER_AB_SCREENSHOTS"]) / "report_confirmed.png")
