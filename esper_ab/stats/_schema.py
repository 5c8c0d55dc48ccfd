"""The decisions-table contract (docs/ANALYZE.md): validation and CSV loading.

One row is one seed judged by one strategy. Columns:

- ``replicate``: the independent unit (one RNG seed of one episode); ints or strings.
- ``blueprint``, ``strategy``: names.
- ``passed`` (bool): the gate's decision. ``pass_epoch`` (int or empty): epochs to pass.
- ``statistic`` (float or empty): the strategy's statistic. Empty (NaN) means unmeasured or not
  applicable; it is never coerced to 0. Unmeasured rows are left out of AUC and Spearman and
  counted separately.
- ``value`` (float): the seed's value against the placebo fork; ``valuable`` (bool).
- optional ``seed``: identifies a seed within (replicate, blueprint) so that strategies can be
  paired seed by seed. Without it, seeds are paired by sorted keys within the cell, never by
  row order: by ``value`` (a seed's value is the same under every strategy), ties broken by
  ``valuable``, ``statistic``, ``passed`` and ``pass_epoch``; rows that are exact duplicates
  cannot be told apart and are refused.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from esper_ab.errors import DataError, shown

REQUIRED_COLUMNS: tuple[str, ...] = (
    "replicate",
    "blueprint",
    "strategy",
    "passed",
    "pass_epoch",
    "statistic",
    "value",
    "valuable",
)
SEED_COLUMN = "seed"
_TRUE = {"true", "t", "yes", "1", "1.0"}
_FALSE = {"false", "f", "no", "0", "0.0"}


def _bad(column: str, problem: str, fix: str) -> DataError:
    return DataError(f"column '{column}' {problem}: {fix}")


def _first_bad(series: pd.Series, mask: np.ndarray) -> str:
    idx = int(np.flatnonzero(mask)[0])
    return f"row {idx} has {shown(series.iloc[idx])}"


def _as_bool(series: pd.Series, column: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype) and not series.isna().any():
        return series.to_numpy(dtype=bool)
    missing = series.isna().to_numpy()
    if missing.any():
        raise _bad(column, f"has an empty cell ({_first_bad(series, missing)})",
                   "every row needs True or False")
    if pd.api.types.is_numeric_dtype(series.dtype):
        arr = series.to_numpy(dtype=float)
        bad = ~np.isin(arr, (0.0, 1.0))
        if bad.any():
            raise _bad(column, f"must be boolean ({_first_bad(series, bad)})",
                       "use True/False or 1/0")
        return arr == 1.0
    text = series.astype(str).str.strip().str.lower().to_numpy()
    is_true = np.isin(text, list(_TRUE))
    is_false = np.isin(text, list(_FALSE))
    bad = ~(is_true | is_false)
    if bad.any():
        raise _bad(column, f"must be boolean ({_first_bad(series, bad)})",
                   "use True/False or 1/0")
    return is_true


def _as_float(series: pd.Series, column: str, *, allow_missing: bool) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype):
        raise _bad(column, "holds booleans", "it must hold numbers")
    numeric = pd.to_numeric(series, errors="coerce")
    unparsable = (numeric.isna() & series.notna()).to_numpy().copy()
    if pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype):
        text = series.astype(str).str.strip()
        blank = (text == "").to_numpy() | series.isna().to_numpy()
        unparsable = unparsable & ~blank
    if unparsable.any():
        raise _bad(column, f"must be numeric ({_first_bad(series, unparsable)})",
                   "write a number, or leave the cell empty where that is allowed")
    arr = numeric.to_numpy(dtype=float, na_value=np.nan)
    if not allow_missing and np.isnan(arr).any():
        raise _bad(column, f"has an empty cell ({_first_bad(series, np.isnan(arr))})",
                   "every row needs a number; value must be known for every seed, "
                   "including rejected ones (no censoring)")
    return arr


def _as_name(series: pd.Series, column: str) -> np.ndarray:
    missing = series.isna().to_numpy()
    if missing.any():
        raise _bad(column, f"has an empty cell ({_first_bad(series, missing)})",
                   "every row needs a name")
    raw = series.astype(str)
    text = raw.str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        raise _bad(column, f"has an empty name ({_first_bad(series, empty)})",
                   "every row needs a non-empty name")
    if column in _DISTINCT_NAMES:
        _check_distinct(pd.unique(raw), column)
    return text.to_numpy(dtype=object)


_DISTINCT_NAMES = ("blueprint", "strategy")


def _check_distinct(names: np.ndarray, column: str) -> None:
    """Refuse names that differ only by surrounding whitespace or case (they would be merged,
    or split, silently); warn when a lone name loses surrounding whitespace."""
    by_key: dict[str, list[str]] = {}
    for name in names:
        by_key.setdefault(str(name).strip().casefold(), []).append(str(name))
    for same in by_key.values():
        if len(same) > 1:
            shown_names = " and ".join(repr(n) for n in sorted(same)[:3])
            raise _bad(column, f"holds {shown_names}, names that differ only by whitespace or "
                       "case", "spell each name one way (or rename one of them)")
    padded = [str(n) for n in names if str(n) != str(n).strip()]
    if padded:
        warnings.warn(f"column '{column}': surrounding whitespace removed from "
                      f"{', '.join(repr(n) for n in padded[:3])}", UserWarning, stacklevel=4)


def _as_replicate(series: pd.Series) -> np.ndarray:
    missing = series.isna().to_numpy()
    if missing.any():
        raise _bad("replicate", f"has an empty cell ({_first_bad(series, missing)})",
                   "every row needs the replicate index it came from")
    if pd.api.types.is_bool_dtype(series.dtype):
        raise _bad("replicate", "holds booleans", "use the replicate index (int) or a name")
    if pd.api.types.is_float_dtype(series.dtype):
        arr = series.to_numpy(dtype=float)
        frac = arr != np.round(arr)
        if frac.any():
            raise _bad("replicate", f"must be an integer index ({_first_bad(series, frac)})",
                       "use the replicate index (int) or a name")
        return arr.astype(np.int64)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    return _as_name(series, "replicate")


def validate_decisions(df: pd.DataFrame) -> pd.DataFrame:
    """Check a decisions table against the contract and return a normalized copy.

    The copy has ``blueprint``/``strategy`` as str, ``passed``/``valuable`` as bool,
    ``pass_epoch``/``statistic``/``value`` as float64 (NaN where empty) and a ``seed`` key
    column, sorted by strategy, replicate, blueprint and seed. Raises :class:`DataError`
    naming the column and the fix.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"decisions must be a pandas DataFrame, got {type(df).__name__}: "
                        "build one with pandas.DataFrame or load_decisions_csv(path)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"decisions table lacks column(s) {missing}: the table needs "
                        f"{list(REQUIRED_COLUMNS)} (docs/ANALYZE.md)")
    if len(df) == 0:
        raise DataError("decisions table has no rows: pass a table with at least one seed "
                        "per strategy and blueprint")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    src = df.reset_index(drop=True)
    out["replicate"] = _as_replicate(src["replicate"])
    out["blueprint"] = _as_name(src["blueprint"], "blueprint")
    out["strategy"] = _as_name(src["strategy"], "strategy")
    out["passed"] = _as_bool(src["passed"], "passed")
    epoch = _as_float(src["pass_epoch"], "pass_epoch", allow_missing=True)
    ok = np.isnan(epoch) | ((epoch >= 0) & (epoch == np.round(epoch)))
    if not ok.all():
        raise _bad("pass_epoch", f"must be a non-negative integer ({_first_bad(src['pass_epoch'], ~ok)})",
                   "write the epoch at which G2 passed, or leave it empty")
    out["pass_epoch"] = epoch
    stat = _as_float(src["statistic"], "statistic", allow_missing=True)
    out["statistic"] = stat
    value = _as_float(src["value"], "value", allow_missing=False)
    if not np.isfinite(value).all():
        raise _bad("value", f"must be finite ({_first_bad(src['value'], ~np.isfinite(value))})",
                   "value is a measured loss/accuracy difference against the placebo fork")
    out["value"] = value
    out["valuable"] = _as_bool(src["valuable"], "valuable")
    for extra in src.columns:
        if extra not in out.columns and extra != SEED_COLUMN:
            out[extra] = src[extra].to_numpy()
    keys = ["strategy", "replicate", "blueprint"]
    if SEED_COLUMN in src.columns:
        out[SEED_COLUMN] = _as_name(src[SEED_COLUMN], SEED_COLUMN).astype(str)
        dup = out.duplicated(keys + [SEED_COLUMN]).to_numpy()
        if dup.any():
            r = out.iloc[np.flatnonzero(dup)[0]]
            raise DataError(f"column 'seed' repeats seed {shown(r['seed'])} for strategy "
                            f"{shown(r['strategy'])}, replicate {shown(r['replicate'])}, blueprint "
                            f"{shown(r['blueprint'])}: each seed must appear once per strategy")
    else:
        dup = out.duplicated(keep=False).to_numpy()
        if dup.any():
            first = np.flatnonzero(dup)[:2]
            r = out.iloc[first[0]]
            raise DataError(f"rows {int(first[0])} and {int(first[1])} are identical (strategy "
                            f"{shown(r['strategy'])}, replicate {shown(r['replicate'])}, blueprint "
                            f"{shown(r['blueprint'])}) and the table has no 'seed' column to tell "
                            "them apart: add a 'seed' column, or drop the duplicate row")
        order = out.sort_values(keys + ["value", "valuable", "statistic", "passed", "pass_epoch"],
                                kind="stable", na_position="last")
        rank = order.groupby(keys, sort=False).cumcount()
        out[SEED_COLUMN] = rank.reindex(out.index).astype(str).to_numpy()
    _check_groups(out)
    return out.sort_values(keys + [SEED_COLUMN], kind="stable").reset_index(drop=True)


def _check_groups(out: pd.DataFrame) -> None:
    s_codes, strategies = pd.factorize(out["strategy"])
    b_codes, blueprints = pd.factorize(out["blueprint"])
    if np.unique(s_codes * len(blueprints) + b_codes).size == len(strategies) * len(blueprints):
        return
    present = set(zip(s_codes.tolist(), b_codes.tolist(), strict=True))
    for i, s in enumerate(strategies):
        for j, b in enumerate(blueprints):
            if (i, j) not in present:
                raise DataError(
                    f"empty group: strategy {shown(s)} has no rows for blueprint {shown(b)}; every "
                    "strategy must judge the same seeds (paired design): add the rows or "
                    "drop that blueprint from the table")


def load_decisions_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a decisions CSV and validate it (see :func:`validate_decisions`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"decisions file {path!r} does not exist: pass the path of a CSV "
                        "written by the episode runner")
    try:
        raw = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"decisions file {path!r} is not a readable CSV ({first}): write it "
                        "with a header row and comma-separated columns") from exc
    return validate_decisions(raw)
