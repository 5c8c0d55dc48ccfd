"""A/A: copies of one strategy compared with each other; every test's empirical FPR."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from esper_ab.errors import bad_value
from esper_ab.stats._analysis import analyze
from esper_ab.stats._lazy import sps
from esper_ab.stats._simulate import SimulationDesign, StrategySpec, simulate_decisions
from esper_ab.stats._verdict import SelectionRule

AA_BASELINE = "baseline"


def default_aa_design(*, n_replicates: int = 20) -> SimulationDesign:
    """Four blueprints with equal pass rates and no signal: the null of every test holds."""
    bps = ("attention", "conv_light", "depthwise", "norm")
    spec = StrategySpec(name=AA_BASELINE, pass_rates=(0.4,) * 4, signal=0.0)
    return SimulationDesign(blueprints=bps, strategies=(spec,), n_replicates=n_replicates,
                            seeds_per_cell=3, replicate_correlation=0.3)


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields explicitly
class AAResult:
    """Empirical false-positive rate of every test over ``n_sims`` A/A tables.

    ``table`` has one row per (test name, strategy, blueprint): ``n_sims`` (in which the test
    was defined), ``n_rejected`` (raw p < alpha), ``fpr``, its 95% Clopper–Pearson CI
    (``fpr_ci_low``/``fpr_ci_high``), the central 95% range of Binomial(n_sims, alpha)/n_sims
    (``band_low``/``band_high``) and ``inside`` that band. ``false_winner_rate`` is the
    fraction of tables in which the verdict named a winner.
    """

    alpha: float
    n_sims: int
    n_copies: int
    table: pd.DataFrame
    false_winner_rate: float


def aa_test(
    design: SimulationDesign | None = None, *, n_copies: int = 3, n_sims: int = 200,
    alpha: float = 0.05, n_perm: int = 1000, n_boot: int = 100,
    rule: SelectionRule | None = None, seed: int = 0,
) -> AAResult:
    """Run ``n_sims`` A/A analyses: the design's first strategy copied ``n_copies`` times
    (named ``baseline``, ``copy_1``, ...), each table analyzed with :func:`analyze`.

    The paired tests' null holds for any design. The within-strategy and Spearman tests' nulls
    hold only when the design plants no blueprint effect and no signal, as
    :func:`default_aa_design` does.
    """
    if n_copies < 2:
        raise bad_value("n_copies", n_copies, "use at least 2 copies (3 to include Cochran's Q)")
    if n_sims < 1:
        raise bad_value("n_sims", n_sims, "use at least 1 simulation (200 or more for an FPR)")
    design = design or default_aa_design()
    template = design.strategies[0]
    names = [AA_BASELINE] + [f"copy_{i}" for i in range(1, n_copies)]
    design = replace(design, strategies=tuple(replace(template, name=n) for n in names))
    records: dict[tuple[str, str, str], list[int]] = {}
    winners = 0
    for i in range(n_sims):
        df = simulate_decisions(design, seed=seed * 1_000_003 + i)
        a = analyze(df, baseline=AA_BASELINE, alpha=alpha, rule=rule, n_boot=n_boot,
                    n_perm=n_perm, seed=seed * 1_000_003 + i)
        winners += a.verdict.winner is not None
        for t in a.tests:
            if np.isnan(t.pvalue):
                continue
            key = (t.name, t.strategy or "", t.blueprint or "")
            rec = records.setdefault(key, [0, 0])
            rec[0] += 1
            rec[1] += int(t.pvalue < alpha)
    rows = []
    for (name, strategy, blueprint), (n, k) in sorted(records.items()):
        lo = 0.0 if k == 0 else float(sps.beta.ppf(0.025, k, n - k + 1))
        hi = 1.0 if k == n else float(sps.beta.ppf(0.975, k + 1, n - k))
        band_lo = float(sps.binom.ppf(0.025, n, alpha)) / n
        band_hi = float(sps.binom.ppf(0.975, n, alpha)) / n
        rows.append({"name": name, "strategy": strategy, "blueprint": blueprint, "n_sims": n,
                     "n_rejected": k, "fpr": k / n, "fpr_ci_low": lo, "fpr_ci_high": hi,
                     "band_low": band_lo, "band_high": band_hi,
                     "inside": band_lo <= k / n <= band_hi})
    return AAResult(alpha=alpha, n_sims=n_sims, n_copies=n_copies, table=pd.DataFrame(rows),
                    false_winner_rate=winners / n_sims)
