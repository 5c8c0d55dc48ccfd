"""The observational plots and conclusion on a planted table: rates as points with their
interval and n (no zero-height bars), the statistic on a log scale with the gate's threshold
drawn, no panel for a strategy that recorded no statistic, and a last line that says which
blueprints never / always pass, counted by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from esper_ab.commands._observational import conclusion
from esper_ab.integrations import observational_figures
from esper_ab.stats import analyze_observational

# strategy -> blueprint -> (seeds per run, passes per run, statistic); 3 runs each
PLANT = {"strict": {"attention": (2, 0, 0.02), "norm": (2, 2, 0.8), "conv": (2, 1, 0.3)},
         "permissive": {"attention": (1, 0, np.nan), "norm": (1, 0, np.nan)}}


def _table() -> pd.DataFrame:
    rows = []
    for strategy, bps in PLANT.items():
        for run in range(3):
            for bp, (n, k, stat) in bps.items():
                for i in range(n):
                    rows.append({"replicate": run, "blueprint": bp, "strategy": strategy,
                                 "passed": i < k, "pass_epoch": 10.0 if i < k else np.nan,
                                 "statistic": stat * (1 + 0.1 * i)})
    return pd.DataFrame(rows)


def test_points_with_intervals_and_n_and_a_log_statistic_with_the_threshold():
    table = _table()
    a = analyze_observational(table, n_perm=50, n_boot=50)
    figs = observational_figures(table, a)
    rates = figs["pass_rate_by_blueprint.png"].axes[0]
    assert not [p for p in rates.patches if isinstance(p, Rectangle)]     # no bars
    notes = sorted(t.get_text() for t in rates.texts)
    want = sorted(f"n={3 * n}" for bps in PLANT.values() for n, _, _ in bps.values())
    assert notes == want
    points = [line for line in rates.lines if line.get_marker() in ("o", "s")]   # not caps
    ys = sorted(float(y) for line in points for y in line.get_ydata())
    hand = sorted(k / n for bps in PLANT.values() for n, k, _ in bps.values())
    assert np.allclose(ys, hand)                        # a rate of 0 is a point at 0
    stat = figs["statistic_by_blueprint.png"]
    assert len(stat.axes) == 1                          # permissive recorded nothing
    ax = stat.axes[0]
    assert ax.get_yscale() == "log" and ax.get_title().startswith("strict")
    assert any(np.allclose(line.get_ydata(), 0.10) for line in ax.lines)   # the threshold
    assert "permissive" in stat._suptitle.get_text()


def test_the_conclusion_names_what_never_and_always_passes():
    a = analyze_observational(_table(), n_perm=50, n_boot=50)
    line = conclusion(a)
    assert line.count("\n") == 0 and line.startswith("Conclusion: ")
    strict = line.split("strict: ", 1)[1]
    assert "never pass: attention (0/6)" in strict and "always pass: norm" in strict
    assert "conv" not in strict.split(";")[0] and "pass rates 0.00-1.00" in strict
    assert "permissive: never pass: attention (0/3), norm (0/3)" in line
