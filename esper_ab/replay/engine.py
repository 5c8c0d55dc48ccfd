"""Replay: exact G2 decisions of any gate from recorded traces, without retraining.

During TRAINING the host is unaffected by its seeds (DOMAIN.md §1, §7), so the decision
of *any* strategy is a pure function of the recorded per-step gradient statistics. This
module computes it for every seed at once: the strategy's statistic over every step of the
trace (one numpy call over the step-first layout of ``_layout``), then the gate's own
vectorized decision core (``Gate.reduce_steps``: clamp and window; ``Gate.decide_epochs``:
EMA and checks). The online ``GateTracker`` runs the very same functions, which is why
replay equals the online gate exactly (tests/replay/ checks it for every strategy, on
synthetic and on recorded episodes).

A sweep replays thousands of configs over one trace, so what configs share is computed once
and cached on the layout: the statistic of each strategy setting, the windowed epochs of
each (statistic, window, clamp), the calibration groups of each cross-fitting fold. A config
then costs its own EMA and checks and one decisions table (built column by column from
arrays); ``benchmarks/replay_throughput.py`` measures it.

Calibrating strategies (per-blueprint thresholds, z-scores) are cross-fitted: replicates
are split into folds; each fold is evaluated by a strategy fitted on the other folds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.errors import ConfigError, DataError
from esper_ab.gate import DecisionArrays, Gate, GateConfig, StepStates, step_states
from esper_ab.replay._labels import label_cross_fitted, labelled_calibration
from esper_ab.replay._layout import (
    CONTROL_BLUEPRINTS,
    SEED_KEYS,
    TRACE_KEYS,
    ReplayArrays,
)
from esper_ab.strategies import (
    REASONS,
    STATE_NAMES,
    Baseline,
    BaselineCalibrated,
    CalibrationData,
    LabelCalibrated,
    StatisticBatch,
    Strategy,
    get_strategy,
    usable_rows,
)

__all__ = ["CONTROL_BLUEPRINTS", "SEED_KEYS", "TRACE_KEYS", "CrossFitSplit", "ReplayArrays",
           "ReplayResult", "TraceSet", "calibration_data", "decide_rows", "decisions_table",
           "fold_split", "replay_decisions"]

_STATE_NAMES = pd.array(list(STATE_NAMES), dtype="str")
_REASONS = pd.array(list(REASONS), dtype="str")


@dataclass(frozen=True)
class TraceSet:
    """Per-seed values and per-step traces of one or more recorded episodes."""

    seeds: pd.DataFrame
    trace: pd.DataFrame
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, table, keys in (("trace", self.trace, TRACE_KEYS),
                                  ("seeds", self.seeds, SEED_KEYS + ("value_acc_pp",
                                                                     "valuable"))):
            missing = [k for k in keys if k not in table.columns]
            if missing:
                raise DataError(f"{name} table lacks column(s) {missing}: record it with "
                                "'esper-ab record' or esper_ab.episodes.runner")

    @property
    def replicates(self) -> list[int]:
        return sorted(int(r) for r in self.trace["replicate"].unique())

    def subset(self, replicates: Sequence[int]) -> TraceSet:
        keep = set(replicates)
        return TraceSet(self.seeds[self.seeds["replicate"].isin(keep)].reset_index(drop=True),
                        self.trace[self.trace["replicate"].isin(keep)].reset_index(drop=True))

    @classmethod
    def from_episode(cls, result: Any) -> TraceSet:
        """The tables of one ``esper_ab.episodes.EpisodeResult`` (to replay any gate on it)."""
        return cls(result.seeds, result.trace)

    @classmethod
    def concat(cls, parts: Sequence[TraceSet]) -> TraceSet:
        if not parts:
            raise DataError("no traces to combine: record at least one replicate")
        return cls(pd.concat([p.seeds for p in parts], ignore_index=True),
                   pd.concat([p.trace for p in parts], ignore_index=True))

    @classmethod
    def load(cls, directory: str | Path) -> TraceSet:
        """Every ``*seeds*.parquet`` / ``*trace*.parquet`` pair below ``directory``."""
        root = Path(directory)
        if not root.is_dir():
            raise DataError(f"traces directory {str(root)!r} does not exist: record traces "
                            "first with 'esper-ab record SPACE.yaml --out DIR'")
        seeds = sorted(root.rglob("*seeds*.parquet"))
        traces = sorted(root.rglob("*trace*.parquet"))
        if not seeds or not traces:
            raise DataError(f"no seeds/trace parquet files under {str(root)!r}: record traces "
                            "first with 'esper-ab record SPACE.yaml --out DIR'")
        return cls(pd.concat([pd.read_parquet(p) for p in seeds], ignore_index=True),
                   pd.concat([pd.read_parquet(p) for p in traces], ignore_index=True))

    def arrays(self) -> ReplayArrays:
        """Columnar form of the trace, computed once and reused by every replay."""
        if "arrays" not in self._cache:
            self._cache["arrays"] = ReplayArrays.build(self)
        return self._cache["arrays"]


@dataclass(frozen=True)
class CrossFitSplit:
    """Which replicates calibrated which: one entry per fold."""

    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (calibration, evaluation)

    def to_dict(self) -> list[dict[str, list[int]]]:
        return [{"calibration": list(c), "evaluation": list(e)} for c, e in self.folds]


@dataclass(frozen=True)
class ReplayResult:
    decisions: pd.DataFrame          # the stats decisions table (+ diagnostic columns)
    split: CrossFitSplit | None      # None when the strategy needs no calibration
    n_seed_epochs: int


def fold_split(replicates: Sequence[int], folds: int) -> CrossFitSplit:
    reps = sorted(replicates)
    if folds < 2 or len(reps) < 2:
        raise ConfigError(f"folds={folds} with replicates {reps}: a calibrating strategy needs "
                          "folds >= 2 and at least 2 replicates to cross-fit")
    folds = min(folds, len(reps))
    groups = [tuple(reps[i::folds]) for i in range(folds)]
    return CrossFitSplit(tuple((tuple(r for r in reps if r not in g), g) for g in groups))


def replay_decisions(traces: TraceSet, config: GateConfig, *, label: str | None = None,
                     folds: int = 2, split: CrossFitSplit | None = None) -> ReplayResult:
    """Decisions of the gate ``config`` for every recorded seed (placebo excluded)."""
    arr = traces.arrays()
    strategy = get_strategy(config.strategy, **dict(config.strategy_params))
    gate = Gate(replace(config, calibration=None), strategy=strategy)
    if strategy.needs_calibration and config.calibration is None:
        split = split or arr.derived(("fold-split", folds),
                                     lambda: fold_split(arr.replicates, folds))
        key = (*_strategy_key(strategy), "cross-fit", split.folds)
        stat = arr.statistic(key, lambda: _label_cross_fitted(traces, arr, strategy, split)
                             if isinstance(strategy, LabelCalibrated)
                             else _cross_fitted(arr, strategy, split))
    else:
        if strategy.needs_calibration:
            strategy.load_fitted_state(config.calibration)
        split = None
        key = _strategy_key(strategy, config.calibration)
        stat = arr.statistic(key, lambda: strategy.statistic_batch(arr.seed, arr.host,
                                                                   arr.context))
    steps = arr.reduction((key, gate.reduction_key()), lambda: gate.reduce_steps(
        arr.kse(stat.value), arr.kse(stat.state), arr.kse(stat.reason), arr.mask,
        states=_step_states(arr, stat)))
    decided = gate.decide_epochs(steps, _thresholds(gate, arr))
    return ReplayResult(decisions=decisions_table(traces, arr, gate, decided,
                                                  label or config.strategy),
                        split=split, n_seed_epochs=int(decided.n_epochs.sum()))


def _step_states(arr: ReplayArrays, stat: StatisticBatch) -> StepStates:
    """``step_states`` of a statistic's (state, reason) arrays, shared by every statistic
    that has the very same arrays (an exponent's for every ``a``: the same edge cases). The
    entry holds both arrays, so their ids stay theirs while it is cached."""
    def make() -> tuple[np.ndarray, np.ndarray, StepStates]:
        return stat.state, stat.reason, step_states(arr.kse(stat.state),
                                                    arr.kse(stat.reason), arr.mask)

    state, reason, states = arr.reduction(("step-states", id(stat.state), id(stat.reason)),
                                          make)
    assert state is stat.state and reason is stat.reason
    return states


def _strategy_key(strategy: Strategy, calibration: Any = None) -> tuple:
    """What makes two strategies compute the same statistic."""
    fitted = None if calibration is None else json.dumps(dict(calibration), sort_keys=True,
                                                         default=str)
    return strategy.name, tuple(sorted(strategy.params.items())), fitted


def _statistic(arr: ReplayArrays, strategy: Strategy) -> StatisticBatch:
    return arr.statistic(_strategy_key(strategy),
                         lambda: strategy.statistic_batch(arr.seed, arr.host, arr.context))


def _cross_fitted(arr: ReplayArrays, template: Strategy, split: CrossFitSplit
                  ) -> StatisticBatch:
    """Fit on each fold's calibration replicates, score its evaluation replicates.

    The baseline statistic, its prepared form and each fold's calibration groups are
    parameter-free, so they are computed once per trace; each config fits on them (in trace
    order, as a fit on those rows alone would) and scores every position with its fold's
    fitted parameters, broadcast per seed over the [K, S, E] layout."""
    if not isinstance(template, BaselineCalibrated):  # pragma: no cover - future strategies
        raise ConfigError(f"strategy {template.name!r} cannot be cross-fitted by replay")
    cls = type(template)
    base = _statistic(arr, Baseline())
    prepared = arr.derived(("prepared", cls.__name__), lambda: template.prepare(base.value))
    usable = arr.derived("usable", lambda: usable_rows(base))
    uniq, _ = arr.seed_codes()
    tables = []
    for cal_reps, _ in split.folds:
        def groups(cal_reps: tuple[int, ...] = cal_reps) -> Any:
            rows = arr.rows_of(cal_reps)
            pooled, grouped = template.group_values(prepared[rows], usable[rows],
                                                    arr.context.blueprint[rows])
            if cls.order_free_fit:   # quantiles: sorted input, the same values, faster
                return np.sort(pooled), [(bp, np.sort(v)) for bp, v in grouped]
            return pooled, grouped

        pooled, grouped = arr.derived(("calibration-groups", cls.__name__, cal_reps), groups)
        fitted = cls(**template.params)
        fitted.load_fitted_state(fitted.fit_grouped(pooled, grouped))
        tables.append(fitted.score_tables(uniq))
    seed_rows = _fold_codes(arr, split)
    per_seed = [np.concatenate([t[j] for t in tables])[seed_rows][None, :, None]
                for j in range(len(tables[0]))]
    kse = StatisticBatch(arr.kse(base.value), arr.kse(base.state), arr.kse(base.reason))
    out = template.score(kse, arr.kse(prepared), per_seed)
    return StatisticBatch(out.value.reshape(-1), base.state, base.reason)


def _label_cross_fitted(traces: TraceSet, arr: ReplayArrays, template: LabelCalibrated,
                        split: CrossFitSplit) -> StatisticBatch:
    """Cross-fitting of a strategy fitted against the seeds' measured values."""
    values = _seed_values(traces, arr)[1]
    seed_rows = _fold_codes(arr, split)
    return label_cross_fitted(arr, template, split, values["value"], values["valuable"],
                              seed_rows)


def calibration_data(traces: TraceSet, strategy: Strategy,
                     replicates: Sequence[int]) -> CalibrationData:
    """The calibration rows of ``replicates`` for ``strategy`` (with each seed's measured
    value when the strategy is fitted against it)."""
    arr = traces.arrays()
    rows = arr.rows_of(list(replicates))
    if isinstance(strategy, LabelCalibrated):
        values = _seed_values(traces, arr)[1]
        return labelled_calibration(arr, rows, values["value"], values["valuable"])
    return arr.calibration(rows)


def _fold_codes(arr: ReplayArrays, split: CrossFitSplit) -> np.ndarray:
    """Per seed: its evaluation fold x distinct blueprints + its blueprint's index (cached
    per split on the arrays)."""
    def make() -> np.ndarray:
        uniq, seed_codes = arr.seed_codes()
        fold_of = {int(r): f for f, (_, ev) in enumerate(split.folds) for r in ev}
        seed_fold = np.array([fold_of[int(r)] for r in arr.seed_table["replicate"]],
                             dtype=np.intp)
        return seed_fold * len(uniq) + seed_codes

    return arr.derived(("fold-codes", split.folds), make)


def _thresholds(gate: Gate, arr: ReplayArrays) -> np.ndarray:
    if not gate.thresholds:
        return np.full(arr.shape[0], float(gate.threshold))
    uniq, codes = arr.seed_codes()
    return np.array([gate.threshold_for(bp) for bp in uniq], dtype=np.float64)[codes]


def decide_rows(gate: Gate, arr: ReplayArrays, value: np.ndarray, state: np.ndarray,
                reason: np.ndarray) -> DecisionArrays:
    """The gate's decisions from per-position statistics over ``arr`` (uncached)."""
    steps = gate.reduce_steps(arr.kse(value), arr.kse(state), arr.kse(reason), arr.mask)
    return gate.decide_epochs(steps, _thresholds(gate, arr))


_SEED_VALUE_COLUMNS = ("value_acc_pp", "value_loss", "valuable", "workload", "slot", "n_params",
                       "dead_at_birth")


def _seed_values(traces: TraceSet, arr: ReplayArrays) -> dict[str, Any]:
    """The seed table's and the recorded per-seed columns as arrays, aligned row by row
    with ``arr.seed_table`` (cached)."""
    if "seed_values" not in traces._cache:
        values = traces.seeds.drop_duplicates(["replicate", "seed_id"])
        keep = [c for c in ("replicate", "seed_id", *_SEED_VALUE_COLUMNS)
                if c in values.columns]
        out = arr.seed_table[["replicate", "seed_id"]].merge(
            values[keep], on=["replicate", "seed_id"], how="left", validate="1:1")
        out = out.drop(columns=["replicate", "seed_id"]).rename(
            columns={"value_acc_pp": "value"})
        if out["value"].isna().any():
            bad = arr.seed_table.loc[out["value"].isna().to_numpy(), "seed_id"].iloc[0]
            raise DataError(f"seed {bad!r} has a trace but no measured value: re-record the "
                            "episode (values are needed for every seed, accepted or not)")
        out["valuable"] = out["valuable"].astype(bool)
        traces._cache["seed_values"] = (
            {c: arr.seed_table[c].array for c in arr.seed_table.columns},
            {c: out[c].array for c in out.columns})
    return traces._cache["seed_values"]


_LABEL = None   # _text_column: a column holding one label


def _text_column(arr: ReplayArrays, names: Any, codes: np.ndarray, label: str = "") -> Any:
    """The string column of ``names[codes]`` (``label`` everywhere when ``names`` is
    ``_LABEL``). Configs of a sweep repeat the same columns, so they are kept by content."""
    def make() -> Any:
        table = pd.array([label], dtype="str") if names is _LABEL else names
        return table.take(codes.astype(np.intp))

    key = (label, len(codes)) if names is _LABEL else (id(names), codes.tobytes())
    return arr.caches["columns"].get(key, make)


def decisions_table(traces: TraceSet, arr: ReplayArrays, gate: Gate, d: DecisionArrays,
                    label: str) -> pd.DataFrame:
    """One row per gated seed: the decision, its statistic and the recorded value. Built
    column by column from arrays (one DataFrame construction: replay runs it per config)."""
    s_count = arr.shape[0]
    keys, values = _seed_values(traces, arr)
    last = np.where(d.passed, d.pass_epoch - 1, np.maximum(d.n_epochs - 1, 0))
    rows = np.arange(s_count)
    ep_state = d.epoch_state[rows, last]
    passed = d.passed.astype(bool)
    cols: dict[str, object] = dict(keys)
    cols["strategy"] = _text_column(arr, _LABEL, np.zeros(s_count, dtype=np.int8), label)
    cols["passed"] = passed
    cols["pass_epoch"] = pd.arrays.IntegerArray(np.where(passed, d.pass_epoch, 0).astype(np.int64),
                                                ~passed)
    cols["statistic"] = np.where(ep_state == 0, d.epoch_value[rows, last], np.nan)
    cols["statistic_state"] = _text_column(arr, _STATE_NAMES, ep_state)
    cols["reason"] = _text_column(arr, _REASONS, d.epoch_reason[rows, last])
    cols["clamped"] = d.epoch_clamped[rows, last]
    cols["threshold"] = d.threshold
    cols.update(values)
    return pd.DataFrame(cols, copy=False)
