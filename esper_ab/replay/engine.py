"""Replay: exact G2 decisions of any gate from recorded traces, without retraining.

During TRAINING the host is unaffected by its seeds (DOMAIN.md §1, §7), so the decision
of *any* strategy is a pure function of the recorded per-step gradient statistics. This
module computes it for every seed at once: the strategy's statistic over all trace rows
(one numpy call), scattered into [seeds, epochs, steps] arrays, then the gate's own
vectorized decision core. The online ``GateTracker`` runs the very same two functions,
which is why replay equals the online gate exactly (tests/test_replay.py checks it on
recorded episodes).

Calibrating strategies (per-blueprint thresholds, z-scores) are cross-fitted: replicates
are split into folds; each fold is evaluated by a strategy fitted on the other folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.errors import ConfigError, DataError
from esper_ab.gate import DecisionArrays, Gate, GateConfig
from esper_ab.strategies import (
    REASONS,
    STATE_NAMES,
    Baseline,
    BaselineCalibrated,
    CalibrationData,
    ContextBatch,
    StatisticBatch,
    StatsBatch,
    Strategy,
    get_strategy,
    usable_rows,
)

TRACE_KEYS = ("replicate", "seed_id", "blueprint", "epoch", "step")
SEED_KEYS = ("replicate", "seed_id", "blueprint")
CONTROL_BLUEPRINTS = frozenset({"placebo"})  # the control is measured against, never gated


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
class ReplayArrays:
    """The trace as numpy batches plus the [seed, epoch, step] index of every row."""

    seed_table: pd.DataFrame   # one row per gated seed, in seed-index order
    seed: StatsBatch
    host: StatsBatch
    context: ContextBatch
    row_seed: np.ndarray
    row_epoch: np.ndarray
    row_step: np.ndarray
    row_replicate: np.ndarray
    shape: tuple[int, int, int]
    row_flat: np.ndarray        # flat index of each row in the [S, E, K] arrays
    dense: bool                 # row_flat == arange: the rows already are [S, E, K]
    seed_blueprints: np.ndarray

    @classmethod
    def build(cls, traces: TraceSet) -> ReplayArrays:
        trace = traces.trace[~traces.trace["blueprint"].isin(CONTROL_BLUEPRINTS)]
        trace = trace.sort_values(["replicate", "seed_id", "epoch", "step"], kind="stable")
        trace = trace.reset_index(drop=True)
        keys = trace[list(SEED_KEYS)].drop_duplicates().reset_index(drop=True)
        seed_index = pd.MultiIndex.from_frame(keys[["replicate", "seed_id"]])
        row_seed = seed_index.get_indexer(pd.MultiIndex.from_frame(
            trace[["replicate", "seed_id"]]))
        epochs = np.sort(trace["epoch"].unique())
        row_epoch = np.searchsorted(epochs, trace["epoch"].to_numpy())
        # Position of each step within its (seed, epoch), in recorded order.
        row_step = trace.groupby([row_seed, row_epoch], sort=False).cumcount().to_numpy()
        k = int(row_step.max()) + 1 if len(trace) else 1

        def opt(col: str) -> np.ndarray:
            if col in trace.columns:
                return trace[col].to_numpy(dtype=np.float64)
            return np.full(len(trace), np.nan)

        ctx = ContextBatch(blueprint=trace["blueprint"].to_numpy(dtype=object),
                           first_order=opt("first_order"), grad_out_norm=opt("grad_out_norm"),
                           delta_norm=opt("delta_norm"))
        shape = (len(keys), len(epochs), k)
        row_flat = (row_seed * shape[1] + row_epoch) * k + row_step
        return cls(seed_table=keys, seed=StatsBatch.from_columns(trace, "seed_"),
                   host=StatsBatch.from_columns(trace, "host_"), context=ctx,
                   row_seed=row_seed, row_epoch=row_epoch, row_step=row_step,
                   row_replicate=trace["replicate"].to_numpy(), shape=shape,
                   row_flat=row_flat,
                   dense=len(row_flat) == int(np.prod(shape))
                   and bool(np.array_equal(row_flat, np.arange(len(row_flat)))),
                   seed_blueprints=keys["blueprint"].to_numpy(dtype=object))

    def rows_of(self, replicates: Sequence[int]) -> np.ndarray:
        return np.isin(self.row_replicate, np.asarray(list(replicates)))

    def calibration(self, rows: np.ndarray) -> CalibrationData:
        def take(b: StatsBatch) -> StatsBatch:
            return StatsBatch(**{f: getattr(b, f)[rows] for f in b.__dataclass_fields__})

        ctx = self.context
        return CalibrationData(
            blueprint=ctx.blueprint[rows], seed=take(self.seed), host=take(self.host),
            context=ContextBatch(blueprint=ctx.blueprint[rows],
                                 first_order=ctx.first_order[rows],
                                 grad_out_norm=ctx.grad_out_norm[rows],
                                 delta_norm=ctx.delta_norm[rows]))


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
        split = split or fold_split(sorted(set(arr.row_replicate.tolist())), folds)
        value, state, reason = _cross_fitted(arr, strategy, split)
    else:
        if strategy.needs_calibration:
            strategy.load_fitted_state(config.calibration)
        split = None
        stat = strategy.statistic_batch(arr.seed, arr.host, arr.context)
        value, state, reason = stat.value, stat.state, stat.reason
    decided = decide_rows(gate, arr, value, state, reason)
    return ReplayResult(decisions=decisions_table(traces, arr, gate, decided,
                                                  label or config.strategy),
                        split=split, n_seed_epochs=int(decided.n_epochs.sum()))


def _cross_fitted(arr: ReplayArrays, template: Strategy, split: CrossFitSplit):
    """Fit on each fold's calibration replicates, score its evaluation replicates."""
    if not isinstance(template, BaselineCalibrated):  # pragma: no cover - future strategies
        raise ConfigError(f"strategy {template.name!r} cannot be cross-fitted by replay")
    base = Baseline().statistic_batch(arr.seed, arr.host, arr.context)
    usable = usable_rows(base)
    bps = arr.context.blueprint
    value = np.full(len(arr.row_seed), np.nan)
    for cal_reps, eval_reps in split.folds:
        fitted = type(template)(**template.params)
        cal = arr.rows_of(cal_reps)
        fitted.load_fitted_state(fitted.fit_values(base.value[cal], usable[cal], bps[cal]))
        rows = arr.rows_of(eval_reps)
        sub = StatisticBatch(base.value[rows], base.state[rows], base.reason[rows])
        value[rows] = fitted.transform(sub, bps[rows]).value
    return value, base.state, base.reason


def decide_rows(gate: Gate, arr: ReplayArrays, value: np.ndarray, state: np.ndarray,
                reason: np.ndarray) -> DecisionArrays:
    """Scatter per-row statistics into [S, E, K] and run the gate's vectorized core."""
    shape = arr.shape
    if arr.dense:  # every seed has every epoch with the same step count: a reshape
        v, st, rs = value.reshape(shape), state.reshape(shape), reason.reshape(shape)
        mask = np.ones(shape, dtype=bool)
    else:
        v = np.full(shape, np.nan)
        st = np.ones(shape, dtype=np.int8)
        rs = np.zeros(shape, dtype=np.int8)
        mask = np.zeros(shape, dtype=bool)
        for target, src in ((v, value), (st, state), (rs, reason), (mask, True)):
            np.put(target, arr.row_flat, src)
    if gate.thresholds:
        thresholds = np.array([gate.threshold_for(bp) for bp in arr.seed_blueprints])
    else:
        thresholds = np.full(shape[0], gate.threshold)
    return gate.decide_arrays(v, st, rs, mask, thresholds)


_SEED_VALUE_COLUMNS = ("value_acc_pp", "value_loss", "valuable", "workload", "slot", "n_params",
                       "dead_at_birth")


def _seed_values(traces: TraceSet, arr: ReplayArrays) -> pd.DataFrame:
    """The recorded per-seed columns, aligned row by row with ``arr.seed_table`` (cached)."""
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
        traces._cache["seed_values"] = out
    return traces._cache["seed_values"]


def decisions_table(traces: TraceSet, arr: ReplayArrays, gate: Gate, d: DecisionArrays,
                    label: str) -> pd.DataFrame:
    """One row per gated seed: the decision, its statistic and the recorded value. Built
    column by column from arrays (one DataFrame construction: replay runs it per config)."""
    s_count = arr.shape[0]
    last = np.where(d.passed, d.pass_epoch - 1, np.maximum(d.n_epochs - 1, 0))
    rows = np.arange(s_count)
    ep_state = d.epoch_state[rows, last]
    passed = d.passed.astype(bool)
    cols: dict[str, object] = {c: arr.seed_table[c].array for c in arr.seed_table.columns}
    cols["strategy"] = np.full(s_count, label, dtype=object)
    cols["passed"] = passed
    cols["pass_epoch"] = pd.arrays.IntegerArray(np.where(passed, d.pass_epoch, 0).astype(np.int64),
                                                ~passed)
    cols["statistic"] = np.where(ep_state == 0, d.epoch_value[rows, last], np.nan)
    cols["statistic_state"] = np.asarray(STATE_NAMES, dtype=object)[ep_state]
    cols["reason"] = np.asarray(REASONS, dtype=object)[d.epoch_reason[rows, last]]
    cols["clamped"] = d.epoch_clamped[rows, last]
    cols["threshold"] = d.threshold
    values = _seed_values(traces, arr)
    for c in values.columns:
        cols[c] = values[c].array
    return pd.DataFrame(cols, copy=False)
