"""The report's two per-blueprint plots for an observational (ingested) table.

- ``pass_rate_by_blueprint.png``: the pass rate per blueprint as a point with its CI
  clustered over runs (:func:`esper_ab.stats.analyze_observational`) and its seed count
  ``n``, one marker per strategy: a rate of 0 is a point at 0 with its interval, never a bar
  of zero height;
- ``statistic_by_blueprint.png``: each seed's statistic per blueprint on a log scale, the
  gate's threshold drawn (esper-lite's G2 ratio: 0.10), every seed a dot with the
  blueprint's median; a strategy without any measured statistic gets no panel (it is named
  in the title), and unmeasured seeds are counted in the labels.

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas (no display, no pyplot).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from esper_ab.errors import DataError
from esper_ab.gate import PRESETS
from esper_ab.stats import ObservationalAnalysis, statistic_samples

PLOT_FILES = ("pass_rate_by_blueprint.png", "statistic_by_blueprint.png")
THRESHOLD = PRESETS["esper_lite_baseline"].threshold    # esper-lite's G2 gradient ratio
MARKERS = "osD^v"


def _pass_rate_figure(a: ObservationalAnalysis) -> Figure:
    pb = a.per_blueprint
    strategies = list(pd.unique(pb["strategy"]))
    bps = sorted(pd.unique(pb["blueprint"]))
    fig = Figure(figsize=(max(6.0, 0.9 * len(bps) + 2), 4.0), layout="constrained")
    ax = fig.add_subplot()
    step = 0.6 / max(1, len(strategies))
    x = np.arange(len(bps))
    for i, name in enumerate(strategies):
        t = pb[pb["strategy"] == name].set_index("blueprint").reindex(bps)
        y = t["pass_rate"].to_numpy(dtype=float)
        err = np.vstack([np.clip(y - t["ci_low"].to_numpy(dtype=float), 0, None),
                         np.clip(t["ci_high"].to_numpy(dtype=float) - y, 0, None)])
        xs = x + (i - (len(strategies) - 1) / 2) * step
        ok = np.isfinite(y)
        ax.errorbar(xs[ok], y[ok], yerr=err[:, ok], fmt=MARKERS[i % len(MARKERS)],
                    capsize=3, markersize=6, label=name)
        for xi, yi, n in zip(xs[ok], y[ok], t["n"].to_numpy()[ok], strict=True):
            ax.annotate(f"n={int(n)}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="0.3")
    ax.set_xticks(x, bps, rotation=30, ha="right")
    ax.set_ylim(-0.05, 1.1)
    ax.set_ylabel(f"G2 pass rate ({a.ci_level:.0%} CI clustered over runs)")
    ax.set_title("Pass rate per blueprint (observational; n = seeds judged)")
    ax.legend(fontsize=8)
    return fig


def _statistic_figure(table: pd.DataFrame, a: ObservationalAnalysis) -> Figure:
    judged = table[table["judged"]] if "judged" in table.columns else table
    names = list(pd.unique(a.per_blueprint["strategy"]))
    measured = [n for n in names
                if np.isfinite(judged.loc[judged["strategy"] == n, "statistic"]
                               .to_numpy(dtype=float)).any()]
    empty = [n for n in names if n not in measured]
    fig = Figure(figsize=(max(7.0, 5.5 * max(1, len(measured))), 4.2), layout="constrained")
    for i, name in enumerate(measured):
        ax = fig.add_subplot(1, len(measured), i + 1)
        d = judged[judged["strategy"] == name]
        bps = sorted(pd.unique(d["blueprint"]))
        data, labels = statistic_samples(d, bps)
        positive = [np.asarray(v, dtype=float)[np.asarray(v, dtype=float) > 0] for v in data]
        for j, v in enumerate(positive):
            if len(v):
                ax.plot(np.full(len(v), j), v, ".", color="k", alpha=0.5, markersize=4)
                ax.plot([j - 0.3, j + 0.3], [np.median(v)] * 2, color="C0", linewidth=2)
        zeros = sum(len(v) - len(p) for v, p in zip(data, positive, strict=True))
        ax.set_yscale("log")
        ax.axhline(THRESHOLD, color="C3", linestyle="--", linewidth=1.2,
                   label=f"G2 threshold {THRESHOLD:g}")
        ax.set_xticks(range(len(bps)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("gradient ratio statistic (log scale)")
        ax.set_title(name + (f" ({zeros} seed(s) at 0 not drawn)" if zeros else ""),
                     fontsize=9)
        ax.legend(fontsize=8, loc="best")
    if not measured:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no measured statistic", ha="center", va="center")
    fig.suptitle("Gate statistic per blueprint (as the client recorded it)"
                 + (f"\nno statistic recorded for {', '.join(empty)}" if empty else ""),
                 fontsize=10)
    return fig


def observational_figures(table: pd.DataFrame, analysis: ObservationalAnalysis
                          ) -> dict[str, Figure]:
    """``{file name: Figure}`` for the two report plots of an observational table."""
    return {PLOT_FILES[0]: _pass_rate_figure(analysis),
            PLOT_FILES[1]: _statistic_figure(table, analysis)}


def write_observational_plots(table: pd.DataFrame, analysis: ObservationalAnalysis,
                              folder: str | os.PathLike[str]) -> list[Path]:
    """Write the two PNGs into ``folder`` (created if needed); return their paths."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, fig in observational_figures(table, analysis).items():
            fig.savefig(out / name, dpi=110)
            paths.append(out / name)
    except OSError as exc:
        raise DataError(f"cannot write --plots {str(folder)!r} ({exc.strerror}): pass a "
                        "writable folder") from None
    return paths
