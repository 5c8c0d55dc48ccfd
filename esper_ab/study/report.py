"""Plots and the self-contained ``report.html`` of a sweep (matplotlib, no display needed).

Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas; no pyplot state), and the
HTML embeds them as base64 PNGs, so the one file shows everything in MLflow's artifact view.

- ``pass_rate_by_blueprint``: pass rate per blueprint, baseline vs the winner (or the best
  trial), with percentile cluster-bootstrap CIs over replicates (the replicate is the unit).
- ``statistic_by_blueprint``: violins of each gate's statistic per blueprint (log scale where
  every value is positive); unmeasured seeds are left out and counted in the labels.
- ``statistic_vs_value``: per blueprint (columns) and gate (rows), each seed's statistic
  against its value, passed seeds filled, the threshold dashed, the replicate-level Spearman
  rho in the title: does the statistic predict value inside a blueprint?
- ``pareto_front``: every complete trial on the first two objectives (or the first objective
  against the selection rule's fairness metric), the non-dominated ones joined.
"""

from __future__ import annotations

import base64
import html
import io
import math
import weakref
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

from esper_ab.stats import statistic_samples
from esper_ab.study.analysis import SELECTION_CAVEAT, SweepAnalysis, pareto_front
from esper_ab.study.outcome import (
    KIND_TITLES,
    arm_prefix,
    blueprint_table,
    blueprint_wide,
    focus_trial,
    ranked_leaderboard,
    verdict_kind,
    verdict_lines,
)
from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL, reference_name

__all__ = ["pass_rate_ci", "png_bytes", "render_html", "sweep_figures"]


def pass_rate_ci(decisions: pd.DataFrame, *, n_boot: int = 1000, ci_level: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """Pass rate per blueprint with a percentile cluster-bootstrap CI over replicates."""
    d = decisions.assign(passed=decisions["passed"].astype(bool))
    reps = pd.unique(d["replicate"])
    bps = list(pd.unique(d["blueprint"]))
    passed = d.pivot_table(index="replicate", columns="blueprint", values="passed",
                           aggfunc="sum").reindex(index=reps, columns=bps).fillna(0).to_numpy()
    total = d.pivot_table(index="replicate", columns="blueprint", values="passed",
                          aggfunc="count").reindex(index=reps, columns=bps).fillna(0).to_numpy()
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(reps), np.full(len(reps), 1.0 / len(reps)), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = passed.sum(0) / total.sum(0)
        boot = (w @ passed) / (w @ total)
    a = (1 - ci_level) / 2
    lo = np.nanquantile(boot, a, axis=0) if n_boot else np.full(len(bps), np.nan)
    hi = np.nanquantile(boot, 1 - a, axis=0) if n_boot else np.full(len(bps), np.nan)
    return pd.DataFrame({"blueprint": bps, "pass_rate": point, "ci_low": lo, "ci_high": hi})


def _arms(sa: SweepAnalysis) -> list[tuple[str, pd.DataFrame]]:
    return [(name, d) for name, _, d in _labelled_arms(sa)]


def _labelled_arms(sa: SweepAnalysis) -> list[tuple[str, str, pd.DataFrame]]:
    """(display name, the analysis' strategy label, decisions) of the baseline and the
    winner (or the best candidate)."""
    t = focus_trial(sa)
    if t is None or t.decisions is None:
        return []
    d = t.decisions
    return [(reference_name(sa.record.spec.baseline), BASELINE_LABEL,
             d[d["strategy"] == BASELINE_LABEL]),
            (t.label, t.label, d[d["strategy"] == CANDIDATE_LABEL])]


def _empty(title: str, text: str) -> Figure:
    fig = Figure(figsize=(6, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _pass_rate_figure(sa: SweepAnalysis, arms: list | None = None,
                      title: str = "Pass rate per blueprint") -> Figure:
    arms = _arms(sa) if arms is None else arms
    if not arms:
        return _empty("Pass rate per blueprint", "no complete trial")
    tables = [(name, pass_rate_ci(d)) for name, d in arms]
    bps = list(tables[0][1]["blueprint"])
    fig = Figure(figsize=(max(6.0, 0.9 * len(bps) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(tables)
    x = np.arange(len(bps))
    for i, (name, t) in enumerate(tables):
        t = t.set_index("blueprint").reindex(bps)
        y = t["pass_rate"].to_numpy()
        err = np.vstack([np.clip(y - t["ci_low"].to_numpy(), 0, None),
                         np.clip(t["ci_high"].to_numpy() - y, 0, None)])
        ax.bar(x + (i - (len(tables) - 1) / 2) * width, y, width, yerr=np.nan_to_num(err),
               capsize=3, label=name)
    ax.set_xticks(x, bps, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("G2 pass rate (95% cluster-bootstrap CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _violin_figure(sa: SweepAnalysis) -> Figure:
    arms = _arms(sa)
    if not arms:
        return _empty("Statistic per blueprint", "no complete trial")
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    for i, (name, d) in enumerate(arms):
        ax = fig.add_subplot(1, len(arms), i + 1)
        bps = list(pd.unique(d["blueprint"]))
        data, labels = statistic_samples(d, bps)
        positive = all(len(v) == 0 or (v > 0).all() for v in data)
        shown = [np.log10(v) if positive else v for v in data]
        pos = [j for j, v in enumerate(shown) if len(v) > 1 and np.ptp(v) > 0]
        if pos:
            ax.violinplot([shown[j] for j in pos], positions=pos, showmedians=True)
        for j, v in enumerate(shown):
            if len(v):
                ax.plot(np.full(len(v), j), v, ".", color="k", alpha=0.4, markersize=3)
        ax.set_xticks(range(len(bps)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("log10 statistic" if positive else "statistic")
        ax.set_title(name, fontsize=9)
    fig.suptitle("Gate statistic per blueprint (the value compared with the threshold)")
    return fig


def _rho(sa: SweepAnalysis, label: str, blueprint: str) -> float:
    g = sa.analysis.metrics.by_group if sa.analysis is not None else None
    if g is None or "spearman_rho" not in g.columns or (label, blueprint) not in g.index:
        return math.nan
    return float(g.loc[(label, blueprint), "spearman_rho"])


def _value_panel(ax, g: pd.DataFrame) -> int:
    """One blueprint of one gate (log x when every statistic is positive); returns the
    number of seeds left out (unmeasured)."""
    x = pd.to_numeric(g["statistic"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(g["value"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    log = bool(ok.any() and (x[ok] > 0).all())
    passed = g["passed"].astype(bool).to_numpy()
    ax.scatter(x[ok & passed], y[ok & passed], s=14, c="C2", label="passed")
    ax.scatter(x[ok & ~passed], y[ok & ~passed], s=14, facecolors="none", edgecolors="C3",
               label="failed")
    thr = pd.to_numeric(g.get("threshold", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(thr) and (not log or thr.median() > 0):
        ax.axvline(float(thr.median()), ls="--", c="0.35", lw=0.9)
    ax.axhline(0.0, c="0.8", lw=0.6)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(numticks=4))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.tick_params(labelsize=7)
    return int((~ok).sum())


def _value_figure(sa: SweepAnalysis) -> Figure:
    arms = _labelled_arms(sa)
    if not arms or "value" not in arms[0][2].columns:
        return _empty("Statistic vs seed value", "no complete trial with seed values")
    bps = list(pd.unique(arms[0][2]["blueprint"]))
    # shared axes and a fixed layout: constrained layout over 2 x 8 panels took seconds
    fig = Figure(figsize=(max(6.0, 2.0 * len(bps) + 1.0), 2.3 * len(arms) + 0.9))
    axes = fig.subplots(len(arms), len(bps), squeeze=False, sharey=True)
    fig.subplots_adjust(left=0.9 / fig.get_figwidth(), right=0.99, wspace=0.08, hspace=0.45,
                        bottom=0.5 / fig.get_figheight(), top=1 - 0.6 / fig.get_figheight())
    for i, (_, label, d) in enumerate(arms):
        for j, bp in enumerate(bps):
            ax = axes[i][j]
            missing = _value_panel(ax, d[d["blueprint"] == bp])
            rho = _rho(sa, label, bp)
            ax.set_title(f"{bp}: rho {rho:.2f}" if math.isfinite(rho) else f"{bp}: rho n/a",
                         fontsize=8)
            if missing:
                ax.text(0.02, 0.02, f"{missing} unmeasured", transform=ax.transAxes, fontsize=6)
            if j == 0:
                ax.set_ylabel(f"{BASELINE_LABEL if i == 0 else label[:24]}\nseed value",
                              fontsize=8)
            if i == len(arms) - 1:
                ax.set_xlabel("statistic", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle("Gate statistic against seed value per blueprint (dashed: threshold; "
                 "rho: Spearman over replicates)", fontsize=10)
    return fig


def _pareto_axes(sa: SweepAnalysis) -> tuple[tuple[str, str], tuple[str, str]]:
    spec = sa.record.spec
    first = spec.objectives[0]
    if len(spec.objectives) > 1:
        second = spec.objectives[1]
        return (first.metric, first.direction), (second.metric, second.direction)
    return (first.metric, first.direction), (spec.selection.fairness_metric, "min")


def _pareto_figure(sa: SweepAnalysis) -> Figure:
    (m1, d1), (m2, d2) = _pareto_axes(sa)
    trials = [t for t in sa.record.trials if t.complete]
    pts = np.array([[t.objective(m1), t.objective(m2)] for t in trials], dtype=float)
    if not len(trials) or not np.isfinite(pts).all(axis=1).any():
        return _empty("Pareto front", "no complete trial with finite objectives")
    front = pareto_front(pts, [d1, d2])
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(pts[~front, 0], pts[~front, 1], c="0.6", label="trials")
    order = np.argsort(pts[front, 0])
    ax.plot(pts[front, 0][order], pts[front, 1][order], "o-", c="C3", label="Pareto front")
    base = trials[0].metrics
    bx, by = base.get(f"g2.{m1}.baseline"), base.get(f"g2.{m2}.baseline")
    if bx is not None and by is not None and math.isfinite(bx) and math.isfinite(by):
        ax.scatter([bx], [by], marker="*", s=150, c="k",
                   label=reference_name(sa.record.spec.baseline))
    if sa.winner is not None:
        ax.scatter([sa.winner.objective(m1)], [sa.winner.objective(m2)], marker="s",
                   s=90, facecolors="none", edgecolors="C2", linewidths=2, label="winner")
    ax.set_xlabel(f"{m1} ({d1})")
    ax.set_ylabel(f"{m2} ({d2})")
    ax.set_title("Trials and the Pareto front")
    ax.legend(fontsize=8)
    return fig


def sweep_figures(sa: SweepAnalysis) -> dict[str, Figure]:
    """The plots that mean something: a Pareto front only for several objectives (one
    objective against a fairness gap is a ranking, drawn as two points and a line)."""
    figs = {"pass_rate_by_blueprint": _pass_rate_figure(sa),
            "statistic_by_blueprint": _violin_figure(sa),
            "statistic_vs_value": _value_figure(sa)}
    if len(sa.record.spec.objectives) > 1:
        figs["pareto_front"] = _pareto_figure(sa)
    return figs


_PNGS: weakref.WeakKeyDictionary[Figure, bytes] = weakref.WeakKeyDictionary()


def png_bytes(fig: Figure) -> bytes:
    """The figure as a PNG, rendered once (the page, MLflow's ``plots/`` and ``--out`` share
    it: rendering the panels costs seconds)."""
    if fig not in _PNGS:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        _PNGS[fig] = buf.getvalue()
    return _PNGS[fig]


def _png(fig: Figure) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def _table(df: pd.DataFrame, table_id: str = "") -> str:
    out = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0,
                     classes="t")
    return out.replace("<table ", f"<table id='{table_id}' ", 1) if table_id else out


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}"
    "img{max-width:100%;height:auto}"
    "table.t{border-collapse:collapse;font-size:12px}"
    "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:11px}"
    "details{margin:1em 0}summary{cursor:pointer;font-weight:bold}"
    ".verdict{padding:1em 1.2em;border-left:6px solid;margin:1em 0}"
    ".verdict .kind{font-weight:bold;text-transform:uppercase;letter-spacing:.05em}"
    ".verdict .headline{font-size:1.1em;margin:.4em 0}"
    ".verdict pre{white-space:pre-wrap}"
    ".verdict.winner{background:#e8f5e9;border-color:#2e7d32}"
    ".verdict.not_better{background:#eceff1;border-color:#546e7a}"
    ".verdict.undecided{background:#fff8e1;border-color:#ff8f00}"
    ".muted{color:#666;font-size:12px}"
    "#search-stage{color:#555;font-size:13px;border-top:3px solid #ccc;margin-top:2.5em}"
    "#search-stage .verdict{background:#fafafa;border-color:#bbb;padding:.5em .8em}"
    "#search-stage .verdict .headline{font-size:1em}#search-stage h2{font-size:1.1em}"
    "#search-stage h1{font-size:1.2em}#search-stage img{max-width:70%}"
    ".answer{font-size:1.35em;font-weight:bold;margin:.3em 0 .6em}")


def _verdict_box(sa: SweepAnalysis) -> str:
    esc = html.escape
    kind = verdict_kind(sa)
    head, *details = verdict_lines(sa)
    items = "".join(f"<li>{esc(line)}</li>" for line in details)
    caveat = (f"<p class='muted'>Note: {esc(SELECTION_CAVEAT)}.</p>"
              if sa.analysis is not None else "")
    reason = sa.analysis.verdict.reason if sa.analysis is not None else sa.reason
    return (f"<div class='verdict {kind}' id='verdict' data-kind='{kind}'>"
            f"<div class='kind'>{esc(KIND_TITLES[kind])}</div>"
            f"<p class='headline'>{esc(head)}</p>" + (f"<ul>{items}</ul>" if items else "")
            + caveat + f"<details><summary>Full reasoning</summary><p>{esc(reason)}</p>"
            "</details></div>")


def _confirmed_focus(conf: Any, spec: Any) -> str | None:
    v, objective = conf.verdict, spec.selection.objective
    overall = conf.analysis.metrics.overall.drop(index=BASELINE_LABEL, errors="ignore")
    return v.winner or (str(overall[objective].astype(float).idxmax())
                        if len(overall) and overall[objective].notna().any() else None)


def _confirmed_box(sa: SweepAnalysis, conf: Any | None = None) -> list[str]:
    """The held-out confirmation, first: the sweep's answer as a headline sentence, the
    baseline vs the winner (or best finalist) per blueprint on the confirmation replicates,
    and its pass-rate plot ([] without a confirmation; the text alone when only the text
    was read back from MLflow)."""
    r, esc = sa.record, html.escape
    if not r.confirmed:
        return []
    kind = r.confirmed_kind if r.confirmed_kind in KIND_TITLES else "undecided"
    text = r.confirmed.strip()
    head = conf.verdict.headline if conf is not None else text.splitlines()[0]
    out = [f"<div class='verdict {kind}' id='confirmed-verdict' data-kind='{kind}'>"
           f"<div class='kind'>{esc(KIND_TITLES[kind])}: confirmed on held-out replicates "
           "(the sweep's answer)</div>",
           f"<p class='answer'>{esc(head.removeprefix('Verdict: '))}</p>"]
    focus = _confirmed_focus(conf, r.spec) if conf is not None else None
    if focus is not None:
        arm = "winner" if conf.verdict.winner else "best"
        long = blueprint_table(conf.analysis, {"baseline": BASELINE_LABEL, arm: focus},
                               conf.decisions)      # arms by role, as MLflow's metrics
        wide = blueprint_wide(long, ["baseline", arm])
        keep = [c for c in wide.columns if c[0] in ("", "pass rate", "TPR", "FPR",
                                                    "realized value")]
        d = conf.decisions
        fig = _pass_rate_figure(sa, [(reference_name(r.spec.baseline),
                                      d[d["strategy"] == BASELINE_LABEL]),
                                     (focus, d[d["strategy"] == focus])],
                                title="Pass rate per blueprint, confirmation replicates")
        out += [f"<p>Per blueprint on the {len(conf.replicates)} confirmation replicates "
                f"{esc(str(list(conf.replicates)))}: the {esc(reference_name(r.spec.baseline))} "
                f"gate vs the {arm} "
                f"<code>{esc(focus)}</code> (TPR: pass rate of the valuable seeds; FPR: of "
                "the others; realized value: the summed value of the seeds that passed).</p>",
                _table(wide[keep], "confirmed-per-blueprint"),
                f"<img alt='confirmed pass rate' src='data:image/png;base64,{_png(fig)}'>"]
    out += [f"<details><summary>The confirmation in full</summary><pre>{esc(text)}</pre>"
            "</details></div>"]
    return out


def _blueprint_section(sa: SweepAnalysis) -> list[str]:
    focus = focus_trial(sa)
    if sa.analysis is None or focus is None:
        return ["<h2>Per blueprint</h2><p id='per-blueprint'>No complete trial: nothing to "
                "compare with the baseline.</p>"]
    prefix = arm_prefix(sa)
    long = blueprint_table(sa.analysis, {"baseline": BASELINE_LABEL, prefix: focus.label},
                           focus.decisions)
    ref = html.escape(reference_name(sa.record.spec.baseline))
    return [f"<h2>Per blueprint: the {ref} gate vs the {prefix} <code>"
            f"{html.escape(focus.label)}</code></h2>",
            "<p class='muted'>Mean value: of every seed of the blueprint (the same seeds for "
            "both gates). Realized value: the sum of the values of the seeds that passed. "
            "TPR: pass rate of the valuable seeds; FPR: of the others.</p>",
            _table(blueprint_wide(long, ["baseline", prefix]), "per-blueprint")]


def render_html(sa: SweepAnalysis, figures: dict[str, Figure], *,
                confirmation: Any | None = None) -> str:
    """One self-contained page (images as data URIs, no script): the verdict, the baseline
    vs the winner per blueprint, the plots, then the trials sorted by the objective. With a
    held-out confirmation (``sa.record.confirmed``; ``confirmation``: its object), its
    answer comes first and the search stage follows in a muted section."""
    r = sa.record
    spec = r.spec
    esc = html.escape
    first = spec.objectives[0]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>esper-ab sweep {esc(spec.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Sweep <code>{esc(spec.name)}</code></h1>",
        f"<p>{esc(spec.description)}</p>" if spec.description else "",
        *_confirmed_box(sa, confirmation),
        "<section id='search-stage'><h2>Search stage</h2><p class='muted'>The trials on the "
        "search replicates, where the finalists were chosen: their p-values are optimistic, "
        "the answer is the confirmation above.</p>" if r.confirmed else "",
        _verdict_box(sa),
        f"<p class='muted'>Experiment <code>{esc(r.experiment)}</code>, sweep run "
        f"<code>{esc(r.sweep_run_id)}</code>, fidelity <b>{esc(spec.fidelity)}</b>, "
        f"{len(spec.replicates)} replicates shared by every trial, baseline gate "
        f"<code>{esc(spec.baseline)}</code>, git <code>{esc(r.git_commit)}</code>.</p>",
        *_blueprint_section(sa), "<h2>Plots</h2>"]
    for name, fig in figures.items():
        parts.append(f"<h3>{esc(name.replace('_', ' '))}</h3>"
                     f"<img alt='{esc(name)}' src='data:image/png;base64,{_png(fig)}'>")
    if sa.analysis is not None:
        g = sa.analysis.metrics.by_group.reset_index()
        cols = [c for c in ("strategy", "blueprint", "n", "n_unmeasured", "pass_rate", "tpr",
                            "fpr", "auc", "spearman_rho") if c in g.columns]
        parts += ["<details><summary>Per blueprint, every selected trial</summary>",
                  _table(g[cols]), "</details>",
                  "<details><summary>Paired analysis against the baseline</summary>"
                  f"<pre>{esc(sa.analysis.format_table())}</pre></details>"]
    board = ranked_leaderboard(sa).drop(columns=["run_id", "trial_id"], errors="ignore")
    parts += ["<h2>Trials</h2>",
              f"<details id='trials'><summary>{len(board)} trial(s), best {esc(first.metric)} "
              f"({esc(first.direction)}) first</summary>", _table(board), "</details>"]
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    parts += ["</section>" if r.confirmed else "",
              f"<p class='muted'>Packages: {esc(versions)}</p>", "</body></html>"]
    return "\n".join(p for p in parts if p)
