"""Replay equals the online gate exactly, for every strategy and gate setting."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from esper_ab.errors import ConfigError, DataError
from esper_ab.gate import Gate, GateConfig
from esper_ab.gradients import GradStats, TypeStats
from esper_ab.replay import TraceSet, fold_split, replay_decisions
from esper_ab.strategies import list_strategies

BLUEPRINTS = {"norm": 33, "attention": 144, "conv_light": 2336, "noop": 0, "placebo": 0}


def random_stats(rng, numel, scale, dead=False, nan=False):
    if numel == 0:
        return GradStats(0.0, 0.0, 0, 0, 0)
    sq = 0.0 if dead else float(scale**2 * numel * rng.lognormal(0, 0.7))
    ab = 0.0 if dead else float(scale * numel * rng.lognormal(0, 0.3))
    if nan:
        sq = math.nan
    conv = numel // 2
    by_type = {"conv": TypeStats(sq * 0.7, ab * 0.6, conv, 1),
               "norm": TypeStats(sq * 0.3, ab * 0.4, numel - conv, 1)}
    return GradStats(sq, ab, numel, 2, 2, int(nan), 0, by_type)


def synthetic_traces(n_reps=4, epochs=12, steps=3, seed=0) -> TraceSet:
    rng = np.random.default_rng(seed)
    trace_rows, seed_rows = [], []
    for rep in range(n_reps):
        for bp, numel in BLUEPRINTS.items():
            sid = f"s0/{bp}"
            scale = {"norm": 0.02, "attention": 0.005, "conv_light": 0.05}.get(bp, 0.0)
            for e in range(epochs):
                for k in range(steps):
                    host = random_stats(rng, 6400, 0.01)
                    if rng.random() < 0.03:
                        host = GradStats(0.0, 0.0, 6400, 4, 4)  # host norm 0: unmeasured
                    s = random_stats(rng, numel, scale, dead=(bp == "attention" and e < 2),
                                     nan=rng.random() < 0.02)
                    row = {"replicate": rep, "seed_id": sid, "blueprint": bp, "epoch": e,
                           "step": e * steps + k, "first_order": float(rng.normal(0, 1e-3)),
                           "grad_out_norm": float(rng.lognormal()),
                           "delta_norm": float(rng.lognormal())}
                    row.update(host.to_row("host_"))
                    row.update(s.to_row("seed_"))
                    trace_rows.append(row)
            value = float(rng.normal(1.0 if bp == "norm" else -0.5, 1.0))
            seed_rows.append({"replicate": rep, "seed_id": sid, "blueprint": bp,
                              "value_acc_pp": value, "value_loss": -value / 100,
                              "valuable": value >= 1.0, "workload": "synthetic", "slot": "s0",
                              "n_params": numel})
    return TraceSet(pd.DataFrame(seed_rows), pd.DataFrame(trace_rows))


TRACES = synthetic_traces()

CONFIGS = [
    GateConfig(strategy="baseline", threshold=0.5, min_epochs=3),
    GateConfig(strategy="baseline", strategy_params={"legacy_edge_cases": True},
               threshold=0.10, clamp=10.0, min_epochs=10, fail_dead_seeds=False),
    GateConfig(strategy="exponent", strategy_params={"a": 0.3}, threshold=0.05, window="mean",
               ema_decay=0.9, min_epochs=2, clamp=2.0),
    GateConfig(strategy="mean_abs", threshold=0.8, window="median", min_epochs=4),
    GateConfig(strategy="per_layer_type", threshold=1.0, window="mean", min_epochs=1),
    GateConfig(strategy="raw", threshold=0.02, ema_decay=0.5, min_epochs=0),
    GateConfig(strategy="first_order_value", strategy_params={"mode": "cosine"},
               threshold=0.0, window="median", min_epochs=2),
    GateConfig(strategy="per_blueprint_threshold", threshold=1.0, min_epochs=3),
    GateConfig(strategy="zscore", strategy_params={"shrinkage": 5.0}, threshold=0.2,
               window="mean", ema_decay=0.8, min_epochs=2),
    GateConfig(strategy="value_calibrated", strategy_params={"min_seeds": 1,
                                                             "statistic": "mean_abs"},
               threshold=1.0, window="median", min_epochs=2),
]


def online_decisions(traces: TraceSet, config: GateConfig, fitted: dict[int, Gate] | None):
    out = {}
    for (rep, sid, bp), rows in traces.trace.groupby(["replicate", "seed_id", "blueprint"]):
        if bp == "placebo":
            continue
        gate = fitted[rep] if fitted else Gate(config)
        tracker = gate.tracker(bp)
        decision = None
        for _, ep in rows.sort_values("step").groupby("epoch", sort=True):
            for _, r in ep.iterrows():
                tracker.observe_step(GradStats.from_row(r, "seed_"), GradStats.from_row(r, "host_"),
                                     first_order=r["first_order"],
                                     grad_out_norm=r["grad_out_norm"], delta_norm=r["delta_norm"])
            decision = tracker.end_epoch()
            if decision.passed:
                break
        out[(rep, sid)] = decision
    return out


def fitted_gates(traces: TraceSet, config: GateConfig, split) -> dict[int, Gate]:
    """Independently fitted online gates: fit on the calibration replicates' rows."""
    from esper_ab.strategies import CalibrationData, get_strategy

    gates = {}
    for cal, ev in split.folds:
        rows = traces.trace[traces.trace["replicate"].isin(cal)
                            & (traces.trace["blueprint"] != "placebo")]
        records = [(r["blueprint"], GradStats.from_row(r, "seed_"), GradStats.from_row(r, "host_"))
                   for _, r in rows.iterrows()]
        strat = get_strategy(config.strategy, **dict(config.strategy_params))
        cal = CalibrationData.from_records(records)
        if getattr(strat, "needs_labels", False):   # fitted against each seed's value
            from esper_ab.strategies import ValueCalibration

            truth = traces.seeds.set_index(["replicate", "seed_id"])
            keys = list(zip(rows["replicate"], rows["seed_id"], strict=True))
            cal = ValueCalibration(
                blueprint=cal.blueprint, seed=cal.seed, host=cal.host,
                seed_key=np.array([f"{r}/{sid}" for r, sid in keys], dtype=object),
                value=truth.loc[keys, "value_acc_pp"].to_numpy(float),
                valuable=truth.loc[keys, "valuable"].to_numpy(bool))
        strat.fit(cal)
        for rep in ev:
            gates[rep] = Gate(config, strategy=strat)
    return gates


@pytest.mark.parametrize("config", CONFIGS, ids=[c.strategy for c in CONFIGS])
def test_replay_equals_online_gate_exactly(config):
    result = replay_decisions(TRACES, config, folds=2)
    fitted = fitted_gates(TRACES, config, result.split) if result.split else None
    online = online_decisions(TRACES, config, fitted)
    assert len(result.decisions) == len(online) == 4 * 4  # placebo excluded
    n_passed = 0
    for _, row in result.decisions.iterrows():
        d = online[(row["replicate"], row["seed_id"])]
        assert bool(row["passed"]) == d.passed, row["seed_id"]
        n_passed += d.passed
        if d.passed:
            assert row["pass_epoch"] == d.epoch
        if d.value is None:
            assert math.isnan(row["statistic"])
        else:
            assert row["statistic"] == d.value  # exact, not approximate
        assert row["reason"] == d.reason and row["statistic_state"] == d.state
    assert 0 < n_passed < len(online) or config.strategy == "baseline"


def test_every_strategy_is_covered():
    assert {c.strategy for c in CONFIGS} == set(list_strategies())


def test_decisions_table_meets_the_stats_contract():
    from esper_ab.stats import validate_decisions

    d = replay_decisions(TRACES, CONFIGS[0], label="baseline").decisions
    validate_decisions(d)
    assert set(d["blueprint"]) == {"norm", "attention", "conv_light", "noop"}
    noop = d[d["blueprint"] == "noop"]
    assert (noop["statistic_state"] == "not_applicable").all() and not noop["passed"].any()
    assert noop["statistic"].isna().all()  # never coerced to 0


def test_cross_fit_split_is_reported_and_disjoint():
    result = replay_decisions(TRACES, CONFIGS[-1], folds=2)
    assert result.split.to_dict() == [{"calibration": [1, 3], "evaluation": [0, 2]},
                                      {"calibration": [0, 2], "evaluation": [1, 3]}]
    with pytest.raises(ConfigError, match="folds=1"):
        fold_split([0, 1], 1)


def test_missing_columns_are_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="value_acc_pp"):
        TraceSet(TRACES.seeds.drop(columns=["value_acc_pp"]), TRACES.trace)
    with pytest.raises(DataError, match="does not exist"):
        TraceSet.load(tmp_path / "missing")
