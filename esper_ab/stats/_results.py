"""The frozen test result and the multiplicity adjustments (Holm, Benjamini–Hochberg, both
by ``statsmodels.stats.multitest.multipletests``)."""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Adjustment = Literal["holm", "bh", "none"]
Scope = Literal["global", "strategy", "blueprint"]


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test. Two-sided throughout.

    ``statistic`` is the test statistic (for the paired permutation tests: the observed
    difference strategy − baseline); ``effect_size`` is named by ``effect_size_name``;
    ``ci`` is a ``ci_level`` interval for the effect where one is defined. ``n_units`` is the
    number of independent units the test used (replicates). ``standard_error`` is the
    bootstrap SE of the effect where one was computed. ``pvalue_adjusted`` is filled by
    :func:`adjust_tests`.
    """

    __test__ = False  # not a pytest test class

    name: str
    method: str
    statistic: float
    pvalue: float
    effect_size: float = float("nan")
    effect_size_name: str = ""
    ci: tuple[float, float] | None = None
    ci_level: float | None = None
    strategy: str | None = None
    blueprint: str | None = None
    pvalue_adjusted: float | None = None
    adjustment: Adjustment | None = None
    n_units: int = 0
    note: str = ""
    standard_error: float = float("nan")

    @property
    def scope(self) -> Scope:
        if self.blueprint is not None:
            return "blueprint"
        return "strategy" if self.strategy is not None else "global"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready mapping (NaN → None)."""
        out: dict[str, object] = {}
        for field in dataclasses.fields(self):
            v = getattr(self, field.name)
            if isinstance(v, tuple):
                v = [_clean(x) for x in v]
            out[field.name] = _clean(v)
        return out


def _clean(v: object) -> object:
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _masked(pvalues: Sequence[float], method: str) -> np.ndarray:
    """statsmodels' ``multipletests`` over the defined (non-NaN) p-values; NaN stays NaN and
    is not counted in the family size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.sum() == 1:  # a family of one is its own adjustment
        out[ok] = np.minimum(p[ok], 1.0)
    elif ok.any():
        # statsmodels' Holm branch calls gc.collect(), which walks the whole heap (0.1-0.3 s
        # per family in a process holding pandas/scipy); frozen objects are not walked.
        gc.freeze()
        try:
            from statsmodels.stats.multitest import multipletests  # imports scipy.stats

            out[ok] = multipletests(p[ok], method=method)[1]
        finally:
            gc.unfreeze()
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not counted."""
    return _masked(pvalues, "holm")


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg (FDR) adjusted p-values; NaN entries stay NaN and are not counted."""
    return _masked(pvalues, "fdr_bh")


def adjust_tests(tests: Sequence[TestResult]) -> tuple[TestResult, ...]:
    """Fill ``pvalue_adjusted`` family by family; a family is one test name in one scope.

    - strategy-level tests (one per strategy, e.g. strategy vs baseline): Holm across strategies;
    - blueprint-level tests (one per strategy × blueprint): Benjamini–Hochberg across them;
    - global tests (e.g. Cochran's Q over all strategies): unadjusted.
    """
    tests = list(tests)
    families: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(tests):
        families.setdefault((t.scope, t.name), []).append(i)
    out = list(tests)
    for (scope, _name), members in families.items():
        p = [tests[i].pvalue for i in members]
        if scope == "strategy":
            adj, how = holm(p), "holm"
        elif scope == "blueprint":
            adj, how = benjamini_hochberg(p), "bh"
        else:
            adj, how = np.asarray(p, dtype=float), "none"
        for i, a in zip(members, adj, strict=True):
            out[i] = dataclasses.replace(tests[i], pvalue_adjusted=float(a), adjustment=how)
    return tuple(out)
