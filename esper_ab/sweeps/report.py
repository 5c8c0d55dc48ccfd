"""Plots and the self-contained ``report.html`` of a sweep (matplotlib, no display needed).

Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas; no pyplot state), and the
HTML embeds them as base64 PNGs, so the one file shows everything in MLflow's artifact view.

- ``pass_rate_by_blueprint``: pass rate per blueprint, baseline vs the winner (or the best
  trial), with percentile cluster-bootstrap CIs over replicates (the replicate is the unit).
- ``statistic_by_blueprint``: violins of each gate's statistic per blueprint (log scale where
  every value is positive); unmeasured seeds are left out and counted in the labels.
- ``pareto_front``: every complete trial on the first two objectives (or the first objective
  against the selection rule's fairness metric), the non-dominated ones joined.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from esper_ab.sweeps.analysis import SweepAnalysis, TrialRecord, pareto_front
from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL

__all__ = ["pass_rate_ci", "render_html", "sweep_figures"]


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


def _focus(sa: SweepAnalysis) -> TrialRecord | None:
    return sa.winner or (sa.selected[0] if sa.selected else None)


def _arms(sa: SweepAnalysis) -> list[tuple[str, pd.DataFrame]]:
    t = _focus(sa)
    if t is None or t.decisions is None:
        return []
    d = t.decisions
    return [(f"baseline ({sa.record.spec.baseline})", d[d["strategy"] == BASELINE_LABEL]),
            (t.label, d[d["strategy"] == CANDIDATE_LABEL])]


def _empty(title: str, text: str) -> Figure:
    fig = Figure(figsize=(6, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _pass_rate_figure(sa: SweepAnalysis) -> Figure:
    arms = _arms(sa)
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
    ax.set_title("Pass rate per blueprint")
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
        data, labels = [], []
        for bp in bps:
            v = pd.to_numeric(d.loc[d["blueprint"] == bp, "statistic"], errors="coerce")
            v = v[np.isfinite(v)].to_numpy()
            missing = int((d["blueprint"] == bp).sum() - len(v))
            labels.append(bp + (f"\n({missing} unmeas.)" if missing else ""))
            data.append(v)
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
        ax.scatter([bx], [by], marker="*", s=150, c="k", label="baseline")
    if sa.winner is not None:
        ax.scatter([sa.winner.objective(m1)], [sa.winner.objective(m2)], marker="s",
                   s=90, facecolors="none", edgecolors="C2", linewidths=2, label="winner")
    ax.set_xlabel(f"{m1} ({d1})")
    ax.set_ylabel(f"{m2} ({d2})")
    ax.set_title("Trials and the Pareto front")
    ax.legend(fontsize=8)
    return fig


def sweep_figures(sa: SweepAnalysis) -> dict[str, Figure]:
    return {"pass_rate_by_blueprint": _pass_rate_figure(sa),
            "statistic_by_blueprint": _violin_figure(sa),
            "pareto_front": _pareto_figure(sa)}


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-",
                      border=0, classes="t")


def render_html(sa: SweepAnalysis, figures: dict[str, Figure]) -> str:
    """One self-contained HTML page: verdict, leaderboard, per-blueprint table, plots."""
    r = sa.record
    spec = r.spec
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>esper-ab sweep {esc(spec.name)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table.t{border-collapse:collapse;font-size:12px}"
        "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:11px}"
        ".verdict{padding:1em;background:#eef6ee;border-left:4px solid #3a3}",
        "</style></head><body>",
        f"<h1>Sweep <code>{esc(spec.name)}</code></h1>",
        f"<p>Experiment <code>{esc(r.experiment)}</code>, sweep run "
        f"<code>{esc(r.sweep_run_id)}</code>, fidelity <b>{esc(spec.fidelity)}</b>, "
        f"{len(spec.replicates)} replicates shared by every trial, baseline gate "
        f"<code>{esc(spec.baseline)}</code>, git <code>{esc(r.git_commit)}</code>.</p>",
        f"<div class='verdict'><b>Verdict.</b> {esc(sa.reason)}</div>",
        "<h2>Trials</h2>", _table(sa.leaderboard.drop(columns=["run_id"])),
    ]
    if sa.analysis is not None:
        g = sa.analysis.metrics.by_group.reset_index()
        cols = [c for c in ("strategy", "blueprint", "n", "n_unmeasured", "pass_rate", "tpr",
                            "fpr", "auc", "spearman_rho") if c in g.columns]
        parts += ["<h2>Per blueprint (selected trials and the baseline)</h2>", _table(g[cols]),
                  "<h2>Paired analysis against the baseline</h2>",
                  f"<pre>{esc(sa.analysis.format_table())}</pre>"]
    for name, fig in figures.items():
        parts.append(f"<h2>{esc(name.replace('_', ' '))}</h2>"
                     f"<img alt='{esc(name)}' src='data:image/png;base64,{_png(fig)}'>")
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    parts += [f"<p><small>Packages: {esc(versions)}</small></p>", "</body></html>"]
    return "\n".join(parts)
