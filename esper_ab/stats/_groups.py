"""``GroupMetrics``: the one core object (metrics × strategy × blueprint), MetricFrame-style.

Per (strategy, blueprint) group, ``by_group`` holds:

- ``n``, ``n_passed``, ``n_valuable``, ``n_unmeasured`` (statistic empty: left out of AUC and
  Spearman, never treated as 0);
- ``pass_rate``; ``tpr`` = P(pass | valuable); ``fpr`` = P(pass | not valuable);
  ``precision`` = P(valuable | pass); ``median_pass_epoch`` over the seeds that passed;
- ``auc`` of the statistic for ``valuable`` with ``auc_ci_low``/``auc_ci_high`` (cluster
  bootstrap over replicates, BCa); ``spearman_rho`` of statistic vs value and its
  ``spearman_pvalue`` (scipy, t approximation), both on the same ``spearman_units``
  independent units: the seeds when each replicate contributes at most one measured seed to
  the group, otherwise the per-replicate mean ranks (seeds sharing a host are not
  independent, and treating them as such inflates the false-positive rate);
  ``spearman_rho_seeds`` is the correlation over the seeds, descriptive (seeds counted as
  independent, no p-value);
- ``realized_utility``: the sum of the values of the seeds that passed.

Per strategy, ``overall`` holds ``n``, ``n_unmeasured``, ``pass_rate``, ``tpr``, ``fpr``,
``balanced_accuracy``, ``mcc`` and ``realized_utility`` over all blueprints pooled.
Undefined rates (no seed in the conditioning class) are NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esper_ab.errors import DataError
from esper_ab.stats._auc import auc_with_bootstrap, pair_counts
from esper_ab.stats._counts import DecisionArrays, build_arrays, gap, min_max_ratio
from esper_ab.stats._lazy import sps
from esper_ab.stats._resample import bca_ci, bootstrap_weights, jackknife_weights
from esper_ab.stats._schema import validate_decisions

GROUP_COLUMNS: tuple[str, ...] = (
    "n", "n_passed", "n_valuable", "n_unmeasured", "pass_rate", "tpr", "fpr", "precision",
    "median_pass_epoch", "auc", "auc_ci_low", "auc_ci_high", "spearman_rho",
    "spearman_pvalue", "spearman_units", "spearman_rho_seeds", "realized_utility",
)
OVERALL_COLUMNS: tuple[str, ...] = (
    "n", "n_unmeasured", "pass_rate", "tpr", "fpr", "balanced_accuracy", "mcc",
    "realized_utility",
)


def _div(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a / b.where(b > 0)).astype(float)


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields explicitly
class GroupMetrics:
    """Metrics per strategy × blueprint (``by_group``) and per strategy (``overall``)."""

    by_group: pd.DataFrame
    overall: pd.DataFrame
    ci_level: float
    n_boot: int

    @classmethod
    def from_decisions(
        cls, df: pd.DataFrame, *, n_boot: int = 1000, ci_level: float = 0.95, seed: int = 0,
        rank_metrics: bool = True,
    ) -> GroupMetrics:
        """Validate ``df`` and compute every group metric (AUC CIs seeded by ``seed``).
        ``rank_metrics=False`` leaves AUC and Spearman NaN (the replay search scores
        thousands of configs on rates alone)."""
        arrays = build_arrays(validate_decisions(df))
        weights = bootstrap_weights(np.random.default_rng(seed), n_boot, arrays.n_replicates)
        return compute_group_metrics(arrays, weights=weights, ci_level=ci_level,
                                     rank_metrics=rank_metrics)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.overall.index)

    @property
    def blueprints(self) -> tuple[str, ...]:
        return tuple(self.by_group.index.get_level_values("blueprint").unique())

    def metric(self, name: str) -> pd.DataFrame:
        """One group metric as a strategy × blueprint table."""
        if name not in self.by_group.columns:
            raise DataError(f"metric {name!r} is not a group metric: use one of "
                            f"{list(self.by_group.columns)}")
        return self.by_group[name].unstack("blueprint").loc[list(self.strategies)]

    def difference(self, name: str) -> pd.Series:
        """max − min of a group metric across blueprints, per strategy (NaN groups skipped)."""
        table = self.metric(name)
        return pd.Series(gap(table.to_numpy(dtype=float), axis=1), index=table.index, name=f"{name}_gap")

    def ratio(self, name: str) -> pd.Series:
        """min / max of a group metric across blueprints, per strategy."""
        table = self.metric(name)
        return pd.Series(min_max_ratio(table.to_numpy(dtype=float), axis=1), index=table.index,
                         name=f"{name}_ratio")


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def spearman_by_replicate(x: np.ndarray, y: np.ndarray, rep: np.ndarray) -> tuple[float, float, int, float]:
    """(rho, p-value, number of independent units, rho over the seeds) for one group.

    With several seeds of one replicate, rho and its p-value are Spearman's on the
    per-replicate mean ranks, one point per replicate; the seed-level rho is descriptive."""
    rho, p = _spearman(x, y)
    reps, inv, counts = np.unique(rep, return_inverse=True, return_counts=True)
    if counts.size == 0 or counts.max() <= 1:
        return rho, p, int(len(x)), rho
    rx = np.bincount(inv, weights=sps.rankdata(x)) / counts
    ry = np.bincount(inv, weights=sps.rankdata(y)) / counts
    rho_r, p_r = _spearman(rx, ry)
    return rho_r, p_r, int(reps.size), rho


def compute_group_metrics(
    arrays: DecisionArrays, *, weights: np.ndarray, ci_level: float, rank_metrics: bool = True
) -> GroupMetrics:
    """GroupMetrics from a validated table's arrays and shared bootstrap weights.

    ``rank_metrics=False`` skips AUC and Spearman (left NaN), e.g. for re-thresholded tables
    where they cannot change.
    """
    f = arrays.frame.assign(
        _unmeasured=arrays.frame["statistic"].isna(),
        _tp=arrays.frame["passed"] & arrays.frame["valuable"],
        _fp=arrays.frame["passed"] & ~arrays.frame["valuable"],
        _notval=~arrays.frame["valuable"],
        _util=arrays.frame["value"].where(arrays.frame["passed"], 0.0),
        _epoch=arrays.frame["pass_epoch"].where(arrays.frame["passed"]),
    )
    g = f.groupby(["strategy", "blueprint"], sort=True)
    agg = pd.DataFrame({
        "n": g.size(),
        "n_passed": g["passed"].sum(),
        "n_valuable": g["valuable"].sum(),
        "n_unmeasured": g["_unmeasured"].sum(),
    })
    tp, fp, notval = g["_tp"].sum(), g["_fp"].sum(), g["_notval"].sum()
    agg["pass_rate"] = _div(agg["n_passed"], agg["n"])
    agg["tpr"] = _div(tp, agg["n_valuable"])
    agg["fpr"] = _div(fp, notval)
    agg["precision"] = _div(tp, agg["n_passed"])
    agg["median_pass_epoch"] = g["_epoch"].median()
    agg["realized_utility"] = g["_util"].sum()
    keys = pd.MultiIndex.from_product([list(arrays.strategies), list(arrays.blueprints)],
                                      names=["strategy", "blueprint"])
    agg = agg.reindex(keys)
    R = arrays.n_replicates
    Ms, pos, neg, rho, pval, units, rho_seeds = [], [], [], [], [], [], []
    frame = arrays.frame
    measured = frame["statistic"].notna().to_numpy()
    stat = frame["statistic"].to_numpy(dtype=float)
    valuable = frame["valuable"].to_numpy(dtype=bool)
    value = frame["value"].to_numpy(dtype=float)
    group_code = arrays.strategy_code * len(arrays.blueprints) + arrays.blueprint_code
    order = np.argsort(group_code, kind="stable")
    bounds = np.searchsorted(group_code[order], np.arange(len(keys) + 1))
    for gi in range(len(keys) if rank_metrics else 0):
        rows = order[bounds[gi]:bounds[gi + 1]]
        rows = rows[measured[rows]]
        M, p, q = pair_counts(stat[rows], valuable[rows], arrays.replicate_code[rows], R)
        Ms.append(M)
        pos.append(p)
        neg.append(q)
        r, pv, u, rs = spearman_by_replicate(stat[rows], value[rows], arrays.replicate_code[rows])
        rho.append(r)
        rho_seeds.append(rs)
        pval.append(pv)
        units.append(u)
    if rank_metrics:
        Ms, pos, neg = np.stack(Ms), np.stack(pos), np.stack(neg)
        auc, boot = auc_with_bootstrap(Ms, pos, neg, weights)
        _, jack = auc_with_bootstrap(Ms, pos, neg, jackknife_weights(R))
        lo, hi = bca_ci(auc, boot, jack, ci_level)
    else:
        auc = lo = hi = rho = pval = rho_seeds = np.full(len(keys), np.nan)
        units = np.zeros(len(keys), dtype=np.int64)
    agg["auc"], agg["auc_ci_low"], agg["auc_ci_high"] = auc, lo, hi
    agg["spearman_rho"], agg["spearman_pvalue"] = rho, pval
    agg["spearman_units"] = np.asarray(units, dtype=np.int64)
    agg["spearman_rho_seeds"] = rho_seeds
    for c in ("n", "n_passed", "n_valuable", "n_unmeasured"):
        agg[c] = agg[c].astype(np.int64)
    by_group = agg[list(GROUP_COLUMNS)]

    s = f.groupby("strategy", sort=True)
    n = s.size()
    val = s["valuable"].sum()
    tp_s, fp_s = s["_tp"].sum(), s["_fp"].sum()
    fn_s, tn_s = val - tp_s, n - val - fp_s
    tpr = _div(tp_s, val)
    tnr = _div(tn_s, n - val)
    denom = ((tp_s + fp_s) * (tp_s + fn_s) * (tn_s + fp_s) * (tn_s + fn_s)).astype(float)
    mcc = ((tp_s * tn_s - fp_s * fn_s) / np.sqrt(denom.where(denom > 0))).fillna(0.0)
    overall = pd.DataFrame({
        "n": n.astype(np.int64),
        "n_unmeasured": s["_unmeasured"].sum().astype(np.int64),
        "pass_rate": _div(s["passed"].sum(), n),
        "tpr": tpr,
        "fpr": _div(fp_s, n - val),
        "balanced_accuracy": (tpr + tnr) / 2.0,
        "mcc": mcc.astype(float),
        "realized_utility": s["_util"].sum().astype(float),
    }).loc[list(arrays.strategies)]
    overall.index.name = "strategy"
    return GroupMetrics(by_group=by_group, overall=overall[list(OVERALL_COLUMNS)],
                        ci_level=float(ci_level), n_boot=int(weights.shape[0]))


def statistic_samples(rows: pd.DataFrame, blueprints: list[str]
                      ) -> tuple[list[np.ndarray], list[str]]:
    """Per blueprint: the finite gate statistics of ``rows`` (one array each) and a label
    that counts the unmeasured ones ("norm\n(3 unmeas.)"): what the statistic plots show."""
    data, labels = [], []
    for bp in blueprints:
        mine = rows["blueprint"] == bp
        v = pd.to_numeric(rows.loc[mine, "statistic"], errors="coerce")
        v = v[np.isfinite(v)].to_numpy()
        missing = int(mine.sum() - len(v))
        labels.append(bp + (f"\n({missing} unmeas.)" if missing else ""))
        data.append(v)
    return data, labels

