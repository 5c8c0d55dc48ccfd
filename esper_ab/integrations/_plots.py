"""The report's two per-blueprint plots for an observational (ingested) table.

- ``pass_rate_by_blueprint.png``: the pass rate per blueprint, one bar per strategy, with the
  CI clustered over runs of :func:`esper_ab.stats.analyze_observational`;
- ``statistic_by_blueprint.png``: each seed's statistic per blueprint (violins where a
  blueprint has spread, every seed as a dot); unmeasured seeds are counted in the labels.

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas (no display, no pyplot).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from esper_ab.errors import DataError
from esper_ab.stats import ObservationalAnalysis, statistic_samples

PLOT_FILES = ("pass_rate_by_blueprint.png", "statistic_by_blueprint.png")


def _pass_rate_figure(a: ObservationalAnalysis) -> Figure:
    pb = a.per_blueprint
    strategies = list(pd.unique(pb["strategy"]))
    bps = sorted(pd.unique(pb["blueprint"]))
    fig = Figure(figsize=(max(6.0, 0.9 * len(bps) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(strategies))
    x = np.arange(len(bps))
    for i, name in enumerate(strategies):
        t = pb[pb["strategy"] == name].set_index("blueprint").reindex(bps)
        y = t["pass_rate"].to_numpy(dtype=float)
        err = np.vstack([np.clip(y - t["ci_low"].to_numpy(dtype=float), 0, None),
                         np.clip(t["ci_high"].to_numpy(dtype=float) - y, 0, None)])
        ax.bar(x + (i - (len(strategies) - 1) / 2) * width, np.nan_to_num(y), width,
               yerr=np.nan_to_num(err), capsize=3, label=name)
    ax.set_xticks(x, bps, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"G2 pass rate ({a.ci_level:.0%} CI clustered over runs)")
    ax.set_title("Pass rate per blueprint (observational)")
    ax.legend(fontsize=8)
    return fig


def _statistic_figure(table: pd.DataFrame, a: ObservationalAnalysis) -> Figure:
    strategies = list(pd.unique(a.per_blueprint["strategy"]))
    fig = Figure(figsize=(max(6.0, 5.5 * len(strategies)), 3.8), layout="constrained")
    judged = table[table["judged"]] if "judged" in table.columns else table
    for i, name in enumerate(strategies):
        ax = fig.add_subplot(1, len(strategies), i + 1)
        d = judged[judged["strategy"] == name]
        bps = sorted(pd.unique(d["blueprint"]))
        data, labels = statistic_samples(d, bps)
        spread = [j for j, v in enumerate(data) if len(v) > 1 and np.ptp(v) > 0]
        if spread:
            ax.violinplot([data[j] for j in spread], positions=spread, showmedians=True)
        for j, v in enumerate(data):
            if len(v):
                ax.plot(np.full(len(v), j), v, ".", color="k", alpha=0.5, markersize=4)
        if not any(len(v) for v in data):
            ax.text(0.5, 0.5, "no measured statistic", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xticks(range(len(bps)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("statistic")
        ax.set_title(name, fontsize=9)
    fig.suptitle("Gate statistic per blueprint (as the client recorded it)")
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
