"""Observational analysis: what a decisions table says without placebo-controlled value.

A table ingested from a real client (``esper-ab ingest``) records which seeds passed G2, when,
and the statistic, but not each seed's value against a placebo. Per strategy and blueprint
this module gives:

- n, the runs it spans, the pass rate with a CI clustered over runs: a Wilson interval on the
  effective sample size n / deff, with the design effect deff = v_cluster / v_binomial
  (>= 1; 1 when every seed passed or none did), where v_cluster is the cluster-robust
  (sandwich) variance of the ratio estimator over runs, G/(G-1) * sum_r (y_r - p n_r)^2 / N^2
  (Korn & Graubard 1998, "Confidence intervals for proportions with small expected number of
  positive counts estimated from survey data", with Wilson in place of Clopper-Pearson);
- the median pass epoch and the statistic's distribution (NaN = unmeasured, counted apart);
- the blueprint x pass test: Pearson's chi-square of the pooled table, its null distribution
  from permuting blueprint labels *within runs* (the run is the independent unit), exact by
  enumeration when the arrangements are few, otherwise Monte Carlo with p = (1 + k)/(1 + n);
- the pass-rate gap (max - min) and ratio (min / max), with percentile cluster-bootstrap CIs
  over runs, and the gap's mean under the permutation null (its bias when blueprints do not
  matter).

Rows with ``g2_attempts == 0`` that did not pass never reached G2 and are left out (counted).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esper_ab.errors import DataError, shown
from esper_ab.stats._lazy import sps

OBSERVATIONAL_COLUMNS = ("replicate", "blueprint", "strategy", "passed", "pass_epoch",
                         "statistic")
NOT_COMPUTABLE = ("not computed: TPR, FPR, the equalized-odds gaps and the verdict need each "
                  "seed's placebo-controlled value, which an observational table lacks")
MAX_EXACT = 200_000        # enumerate the permutation null when it has at most this many points
_TRUE, _FALSE = {"true", "1", "1.0", "yes"}, {"false", "0", "0.0", "no"}


def _bool(col: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=bool)
    text = col.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"column '{name}' row {i} has {shown(col.iloc[i])}: use True/False")
    return text.isin(_TRUE).to_numpy()


def _float(col: pd.Series, name: str) -> np.ndarray:
    num = pd.to_numeric(col, errors="coerce")
    blank = col.isna() | (col.astype(str).str.strip() == "")
    bad = num.isna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"column '{name}' row {i} has {shown(col.iloc[i])}: write a number or "
                        "leave the cell empty")
    return num.to_numpy(dtype=float, na_value=np.nan)


def validate_observational(df: pd.DataFrame) -> pd.DataFrame:
    """Check the columns an observational analysis needs; value columns are not required."""
    missing = [c for c in OBSERVATIONAL_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"table lacks column(s) {missing}: an observational table needs "
                        f"{list(OBSERVATIONAL_COLUMNS)} (write one with 'esper-ab ingest')")
    if len(df) == 0:
        raise DataError("table has no rows: ingest at least one run with seeds")
    out = df.reset_index(drop=True).copy()
    for name in ("replicate", "blueprint", "strategy"):
        text = out[name].astype("string").str.strip()
        empty = text.isna() | (text == "")
        if empty.any():
            raise DataError(f"column '{name}' row {int(np.flatnonzero(empty.to_numpy())[0])} "
                            "is empty: every row needs a name")
        out[name] = text.astype(str)
    out["passed"] = _bool(out["passed"], "passed")
    epoch = _float(out["pass_epoch"], "pass_epoch")
    if (epoch[np.isfinite(epoch)] < 0).any():
        raise DataError("column 'pass_epoch' has a negative epoch: write epochs >= 0")
    out["pass_epoch"] = epoch
    out["statistic"] = _float(out["statistic"], "statistic")
    attempts = _float(out["g2_attempts"], "g2_attempts") if "g2_attempts" in out else None
    out["judged"] = out["passed"].to_numpy() | (
        True if attempts is None else np.nan_to_num(attempts, nan=0.0) > 0)
    return out


def load_observational_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"table {path!r} does not exist: write one with 'esper-ab ingest "
                        "esper-lite PATH --out decisions.csv'")
    try:
        raw = pd.read_csv(path, dtype={"replicate": str, "blueprint": str, "strategy": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"table {path!r} is not a readable CSV ({type(exc).__name__}): write "
                        "it with a header row") from None
    return validate_observational(raw)


def clustered_pass_rate(passed: np.ndarray, cluster: np.ndarray, *,
                        level: float = 0.95) -> tuple[float, float, float, float]:
    """(pass rate, CI low, CI high, design effect), the CI clustered over ``cluster``."""
    _, code = np.unique(cluster, return_inverse=True)
    y = np.bincount(code, weights=np.asarray(passed, dtype=float))
    n = np.bincount(code).astype(float)
    total, g = n.sum(), len(n)
    p = float(y.sum() / total)
    deff = 1.0
    if g >= 2 and 0.0 < p < 1.0:
        v = g / (g - 1) * float(((y - p * n) ** 2).sum()) / total ** 2
        deff = max(1.0, v / (p * (1.0 - p) / total))
    m = total / deff
    z = float(sps.norm.ppf(0.5 + level / 2))
    denom = 1.0 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / m + z * z / (4 * m * m))
    return p, max(0.0, centre - half), min(1.0, centre + half), deff


def _chi2(passes: np.ndarray, n_b: np.ndarray, total_pass: float) -> np.ndarray:
    """Pearson chi-square of blueprint x {pass, fail} with fixed margins, over leading axes."""
    n = n_b.sum()
    e_pass = n_b * total_pass / n
    e_fail = n_b - e_pass
    return ((passes - e_pass) ** 2 * (1.0 / e_pass + 1.0 / e_fail)).sum(axis=-1)


def _gap(passes: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = passes / n_b
    return np.nanmax(rate, axis=-1) - np.nanmin(rate, axis=-1)


@dataclass(frozen=True)
class PermutationNull:
    chi2: float
    pvalue: float
    gap_null_mean: float
    exact: bool
    n_points: int          # arrangements enumerated, or Monte Carlo permutations
    n_informative: int     # runs whose seeds do not all agree (the rest add nothing)


def _run_arrangements(bp: np.ndarray, passed: np.ndarray, n_bp: int) -> np.ndarray:
    """Per-blueprint pass counts of every distinct arrangement of one run's pass labels."""
    perms = sorted(set(itertools.permutations(passed.tolist())))
    out = np.zeros((len(perms), n_bp))
    for i, perm in enumerate(perms):
        np.add.at(out[i], bp, np.asarray(perm, dtype=float))
    return out


def within_run_permutation(passed: np.ndarray, bp: np.ndarray, run: np.ndarray, n_bp: int, *,
                           n_perm: int, rng: np.random.Generator) -> PermutationNull:
    """Chi-square of blueprint x pass against blueprint labels permuted within runs."""
    passed = np.asarray(passed, dtype=float)
    n_b = np.bincount(bp, minlength=n_bp).astype(float)
    total = passed.sum()
    obs_passes = np.bincount(bp, weights=passed, minlength=n_bp)
    observed = float(_chi2(obs_passes, n_b, total))
    _, rc = np.unique(run, return_inverse=True)
    per_run = np.bincount(rc, weights=passed)
    size = np.bincount(rc)
    mixed = np.flatnonzero((per_run > 0) & (per_run < size))
    fixed = np.bincount(bp[~np.isin(rc, mixed)], weights=passed[~np.isin(rc, mixed)],
                        minlength=n_bp)
    count = math.prod(math.comb(int(size[r]), int(per_run[r])) for r in mixed)
    tol = 1e-9 * max(1.0, abs(observed))
    if count <= MAX_EXACT:
        totals = fixed[None, :]
        for r in mixed:
            idx = rc == r
            arr = _run_arrangements(bp[idx], passed[idx], n_bp)
            totals = (totals[:, None, :] + arr[None, :, :]).reshape(-1, n_bp)
        null, gaps = _chi2(totals, n_b, total), _gap(totals, n_b)
        p = float((null >= observed - tol).mean())
        return PermutationNull(observed, p, float(gaps.mean()), True, int(count), len(mixed))
    order = np.argsort(rc, kind="stable")
    rc_s, bp_s, pass_s = rc[order], bp[order], passed[order]
    onehot = np.zeros((len(bp_s), n_bp))
    onehot[np.arange(len(bp_s)), bp_s] = 1.0
    exceed, gap_sum = 0, 0.0
    chunk = max(1, 2_000_000 // max(1, len(bp_s)))
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        keys = rng.random((m, len(bp_s))) + rc_s[None, :]   # shuffles within each run only
        perm_passes = pass_s[np.argsort(keys, axis=1)] @ onehot
        exceed += int((_chi2(perm_passes, n_b, total) >= observed - tol).sum())
        gap_sum += float(_gap(perm_passes, n_b).sum())
    return PermutationNull(observed, (1 + exceed) / (1 + n_perm), gap_sum / n_perm, False,
                           n_perm, len(mixed))


def _bootstrap_gap_ratio(passes_rb: np.ndarray, n_rb: np.ndarray, *, n_boot: int,
                         level: float, rng: np.random.Generator) -> tuple[float, ...]:
    g = passes_rb.shape[0]
    w = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (w @ passes_rb) / (w @ n_rb)
    hi, lo = np.nanmax(rate, axis=1), np.nanmin(rate, axis=1)
    ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 1.0)
    a = (1 - level) / 2
    return (float(np.quantile(hi - lo, a)), float(np.quantile(hi - lo, 1 - a)),
            float(np.quantile(ratio, a)), float(np.quantile(ratio, 1 - a)))


def _stat_summary(v: np.ndarray) -> dict[str, float]:
    m = v[np.isfinite(v)]
    q = np.quantile(m, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(m) else np.full(5, np.nan)
    return {"stat_n": int(len(m)), "stat_unmeasured": int(len(v) - len(m)),
            "stat_min": q[0], "stat_q25": q[1], "stat_median": q[2], "stat_q75": q[3],
            "stat_max": q[4]}


@dataclass(frozen=True, eq=False)
class ObservationalAnalysis:
    per_blueprint: pd.DataFrame
    tests: pd.DataFrame
    disparities: pd.DataFrame
    never_judged: dict[str, int]
    ci_level: float

    def format_table(self) -> str:
        return format_observational(self)

    def to_dict(self) -> dict[str, object]:
        def records(df: pd.DataFrame) -> list[dict[str, object]]:
            return [{k: (None if isinstance(v, float) and not math.isfinite(v) else
                         v.item() if isinstance(v, np.generic) else v)
                     for k, v in row.items()} for row in df.to_dict("records")]
        return {"kind": "observational", "ci_level": self.ci_level,
                "per_blueprint": records(self.per_blueprint), "tests": records(self.tests),
                "disparities": records(self.disparities),
                "never_judged": dict(self.never_judged), "not_computed": NOT_COMPUTABLE}


def analyze_observational(table: pd.DataFrame, *, ci_level: float = 0.95, n_perm: int = 2000,
                          n_boot: int = 1000, seed: int = 0) -> ObservationalAnalysis:
    """Per-blueprint pass rates, the blueprint x pass test and the pass-rate disparities."""
    if not 0.0 < ci_level < 1.0:
        raise DataError(f"ci_level={ci_level!r} is invalid: use a level in (0, 1), e.g. 0.95")
    if n_perm < 1 or n_boot < 1:
        raise DataError(f"n_perm={n_perm}, n_boot={n_boot}: use at least 1 of each")
    d = table if "judged" in table.columns else validate_observational(table)
    rng = np.random.default_rng(seed)
    rows, tests, disp, never = [], [], [], {}
    for strategy in sorted(pd.unique(d["strategy"])):
        s = d[d["strategy"] == strategy]
        never[strategy] = int((~s["judged"]).sum())
        s = s[s["judged"]]
        if s.empty:
            continue
        bps = sorted(pd.unique(s["blueprint"]))
        bp = pd.Categorical(s["blueprint"], categories=bps).codes.astype(np.int64)
        run = s["replicate"].to_numpy()
        passed = s["passed"].to_numpy(dtype=bool)
        for i, name in enumerate(bps):
            m = bp == i
            p, lo, hi, deff = clustered_pass_rate(passed[m], run[m], level=ci_level)
            ep = s["pass_epoch"].to_numpy()[m & passed]
            ep = ep[np.isfinite(ep)]
            rows.append({"strategy": strategy, "blueprint": name, "n": int(m.sum()),
                         "runs": int(len(np.unique(run[m]))), "passes": int(passed[m].sum()),
                         "pass_rate": p, "ci_low": lo, "ci_high": hi, "design_effect": deff,
                         "median_pass_epoch": float(np.median(ep)) if len(ep) else math.nan,
                         **_stat_summary(s["statistic"].to_numpy()[m])})
        tests.append(_test_row(strategy, passed, bp, run, len(bps), n_perm=n_perm, rng=rng))
        disp.append(_disparity_row(strategy, passed, bp, run, len(bps), null=tests[-1],
                                   n_boot=n_boot, level=ci_level, rng=rng))
    if not rows:
        raise DataError("no seed in the table reached a G2 check (every row has g2_attempts "
                        "= 0 and passed = False): ingest runs in which G2 was evaluated")
    return ObservationalAnalysis(pd.DataFrame(rows), pd.DataFrame(tests), pd.DataFrame(disp),
                                 never, ci_level)


def _test_row(strategy: str, passed: np.ndarray, bp: np.ndarray, run: np.ndarray, n_bp: int,
              *, n_perm: int, rng: np.random.Generator) -> dict[str, object]:
    base = {"strategy": strategy, "test": "blueprint_pass_independence",
            "n_seeds": int(len(passed)), "n_runs": int(len(np.unique(run)))}
    if n_bp < 2 or passed.all() or not passed.any():
        why = "one blueprint" if n_bp < 2 else "every seed passed, or none did"
        return {**base, "method": f"none: {why}", "chi2": 0.0, "pvalue": 1.0,
                "cramers_v": 0.0, "exact": True, "n_points": 1, "n_informative_runs": 0,
                "gap_null_mean": 0.0}
    null = within_run_permutation(passed, bp, run, n_bp, n_perm=n_perm, rng=rng)
    how = (f"exact over {null.n_points} arrangements" if null.exact
           else f"Monte Carlo, {null.n_points} permutations")
    return {**base, "method": "Pearson chi-square, blueprint labels permuted within runs "
                              f"({how})", "chi2": null.chi2, "pvalue": null.pvalue,
            "cramers_v": math.sqrt(null.chi2 / len(passed)), "exact": null.exact,
            "n_points": null.n_points, "n_informative_runs": null.n_informative,
            "gap_null_mean": null.gap_null_mean}


def _disparity_row(strategy: str, passed: np.ndarray, bp: np.ndarray, run: np.ndarray,
                   n_bp: int, *, null: dict[str, object], n_boot: int, level: float,
                   rng: np.random.Generator) -> dict[str, object]:
    _, rc = np.unique(run, return_inverse=True)
    g = int(rc.max()) + 1
    passes_rb = np.zeros((g, n_bp))
    n_rb = np.zeros((g, n_bp))
    np.add.at(passes_rb, (rc, bp), passed.astype(float))
    np.add.at(n_rb, (rc, bp), 1.0)
    rate = passes_rb.sum(0) / n_rb.sum(0)
    hi, lo = float(rate.max()), float(rate.min())
    g_lo, g_hi, r_lo, r_hi = _bootstrap_gap_ratio(passes_rb, n_rb, n_boot=n_boot, level=level,
                                                  rng=rng)
    return {"strategy": strategy, "pass_rate_gap": hi - lo, "gap_ci_low": g_lo,
            "gap_ci_high": g_hi, "gap_null_mean": null["gap_null_mean"],
            "pass_rate_ratio": lo / hi if hi > 0 else 1.0, "ratio_ci_low": r_lo,
            "ratio_ci_high": r_hi}


def _num(x: float, spec: str = ".2f") -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def format_observational(a: ObservationalAnalysis) -> str:
    """The console report: one block per strategy (its table by ``esper_ab.console``:
    aligned, names whole), then what cannot be computed."""
    from esper_ab.console import render_table

    pct = f"{a.ci_level:.0%}"
    out = []
    for strategy in list(a.tests["strategy"]) if len(a.tests) else []:
        pb = a.per_blueprint[a.per_blueprint["strategy"] == strategy]
        t = a.tests[a.tests["strategy"] == strategy].iloc[0]
        dr = a.disparities[a.disparities["strategy"] == strategy].iloc[0]
        out.append(f"== {strategy}: {t['n_seeds']} seeds judged at G2 in {t['n_runs']} runs"
                   f" ({a.never_judged.get(strategy, 0)} never reached G2, left out)")
        cols = ["blueprint", "n", "runs", "passes", f"pass rate [{pct} CI]",
                "median epoch", "stat n", "min", "q25", "median", "q75", "max"]
        rows = [[r["blueprint"], int(r["n"]), int(r["runs"]), int(r["passes"]),
                 f"{r['pass_rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
                 _num(r["median_pass_epoch"], ".1f"), int(r["stat_n"]),
                 *(_num(r[f"stat_{q}"]) for q in ("min", "q25", "median", "q75", "max"))]
                for _, r in pb.iterrows()]
        out.append(render_table(cols, rows, numeric=cols[1:], keep=["blueprint"]))
        out.append(f"blueprint x pass: {t['method']}: chi2 = {t['chi2']:.2f}, "
                   f"p = {t['pvalue']:.3g}, Cramer's V = {t['cramers_v']:.2f} "
                   f"({t['n_informative_runs']} of {t['n_runs']} runs informative)")
        out.append(f"pass-rate gap (max - min) = {dr['pass_rate_gap']:.2f} "
                   f"[{dr['gap_ci_low']:.2f}, {dr['gap_ci_high']:.2f}] (cluster bootstrap "
                   f"over runs; {dr['gap_null_mean']:.2f} expected if blueprints did not "
                   f"matter); ratio (min / max) = {dr['pass_rate_ratio']:.2f} "
                   f"[{dr['ratio_ci_low']:.2f}, {dr['ratio_ci_high']:.2f}]")
        out.append("")
    for strategy, n in sorted(a.never_judged.items()):
        if strategy not in set(a.tests["strategy"]):
            out.append(f"== {strategy}: {n} seeds, none reached a G2 check (left out)")
    out.append(NOT_COMPUTABLE)
    return "\n".join(out)
