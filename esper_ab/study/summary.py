"""The end of a sweep, from MLflow alone: read it back, analyze across trials, report.

The sweep driver calls ``summarize_sweep(..., log=True)`` when Tune is done (it logs the
analysis, the plots and ``report.html`` on the parent run); ``esper-ab report`` calls the same
code with ``out=DIR``. Both read only what MLflow holds, so the report is reproducible from
the tracking store.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

from esper_ab.study.analysis import SweepAnalysis, analyze_sweep
from esper_ab.study.report import png_bytes, render_html, sweep_figures
from esper_ab.tracking import SweepTracker

__all__ = ["format_summary", "summarize_sweep"]


def summarize_sweep(tracker: SweepTracker, experiment: str, sweep_run_id: str | None = None,
                    *, n_boot: int = 1000, n_perm: int = 2000, log: bool = False,
                    out: str | Path | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> SweepAnalysis:
    """``progress("analysis", step, 4)`` after each step: read back, analyze, plot, write."""
    tick = progress or (lambda phase, done, total: None)
    tick("analysis", 0, 4)
    record = tracker.load_sweep(experiment, sweep_run_id)
    tick("analysis", 1, 4)
    result = analyze_sweep(record, n_boot=n_boot, n_perm=n_perm)
    tick("analysis", 2, 4)
    figures = sweep_figures(result)
    page = render_html(result, figures)
    tick("analysis", 3, 4)
    if log:
        tracker.log_sweep_summary(record.sweep_run_id, result, html=page, figures=figures)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.html").write_text(page, encoding="utf-8")
        for name, fig in figures.items():
            (folder / f"{name}.png").write_bytes(png_bytes(fig))   # rendered once
        result.leaderboard.to_csv(folder / "leaderboard.csv", index=False)
        if result.analysis is not None:
            (folder / "analysis.json").write_text(
                json.dumps(result.analysis.to_dict(), indent=1, allow_nan=True))
            (folder / "analysis.txt").write_text(result.analysis_text())
            result.decisions.to_csv(folder / "decisions.csv", index=False)
    tick("analysis", 4, 4)
    return result


def format_summary(result: SweepAnalysis) -> str:
    """What the CLI prints: the per-blueprint table of the winner (or best trial) next to the
    baseline, the trials best first, and the verdict (tables: ``esper_ab.console``, aligned,
    rounded, wrapped between words)."""
    from esper_ab.console import render_table
    from esper_ab.study.outcome import ranked_leaderboard
    from esper_ab.trial import BASELINE_LABEL, reference_name

    lines = [f"sweep {result.record.spec.name!r}: run {result.record.sweep_run_id} in "
             f"experiment {result.record.experiment!r}, {len(result.record.trials)} trial(s)"]
    if result.analysis is not None:
        g = result.analysis.metrics.by_group
        focus = result.winner or result.selected[0]
        base, cand = g.loc[BASELINE_LABEL], g.loc[focus.label]
        arm = "win" if result.winner else "best"
        cols = ["blueprint", "seeds", "unmeas.", "pass ref", f"pass {arm}", "TPR ref",
                f"TPR {arm}", "FPR ref", f"FPR {arm}"]
        rows = [[bp, int(b["n"]), int(b["n_unmeasured"]), b["pass_rate"],
                 cand.loc[bp, "pass_rate"], b["tpr"], cand.loc[bp, "tpr"], b["fpr"],
                 cand.loc[bp, "fpr"]] for bp, b in base.iterrows()]
        lines += ["", render_table(cols, rows, numeric=cols[1:], keep=["blueprint"],
                                   title="Per blueprint: the "
                                         f"{reference_name(result.record.spec.baseline)} "
                                         f"gate (ref) vs {focus.label} ({arm})")]
    board = ranked_leaderboard(result)
    metrics = [o.metric for o in result.record.spec.objectives]
    lines += ["", render_table(
        ["trial", "status", "replicates", *metrics, "parameters"],
        [[r["trial"], r["status"] + (" (stopped early)" if r["stopped_early"] else ""),
          int(r["replicates"]) if r["replicates"] == r["replicates"] else None,
          *[r[m] for m in metrics], r["params"]]
         for _, r in board.iterrows()],
        title=f"Trials, best {metrics[0]} first", numeric=["replicates", *metrics],
        keep=["trial"])]
    lines += [""] + [wrapped for line in result.summary_lines()   # headline, candidates, note
                     for wrapped in textwrap.wrap(line, width=100, break_long_words=False,
                                                  break_on_hyphens=False,
                                                  subsequent_indent="    ")]
    if result.record.confirmed:   # read back from MLflow: the sweep's answer comes last
        lines += ["", "Search stage above; the sweep's answer:", result.record.confirmed.strip()]
    return "\n".join(lines)
