"""Pareto front and pass-rate CIs against independent reference computations."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from esper_ab.sweeps.analysis import pareto_front
from esper_ab.sweeps.report import pass_rate_ci


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
